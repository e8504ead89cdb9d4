"""The web view served by the agent itself (``ui_listen`` in ``config.toml``).

It is the same server as ``zmesh ui``: a client of the agent's own Unix socket and
``Campaigns`` API. Its URL, with a fresh access token, goes to ``<home>/ui.url``
(mode 0600, like the socket); the log line gives the address without the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from zambeze_mesh.campaign.client import Client
from zambeze_mesh.settings.config import split_hostport
from zambeze_mesh.settings.home import Home
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.ui.server import UiServer

__all__ = ["EmbeddedUi", "start_embedded"]

log = logging.getLogger(__name__)


@dataclass
class EmbeddedUi:
    """A running web view inside the agent's event loop."""

    server: UiServer
    task: asyncio.Task[None]
    client: Client

    async def close(self) -> None:
        """Stop serving and close the client."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self.client.close()


async def start_embedded(home: Home, listen: str) -> EmbeddedUi:
    """Serve the web view on ``listen`` (``HOST:PORT``) for the agent of ``home``."""
    host, port = split_hostport(listen)
    client = Client(f"unix:{home.socket}")
    server = UiServer(client, host=host, port=port, handle_signals=False)
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve(lambda url: ready.set()))
    done, _ = await asyncio.wait(
        [task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    if task in done:
        task.result()  # raises why it could not start
    url_file = home.root / "ui.url"
    fd = os.open(url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(server.url + "\n")
    log_event(log, "ui.started", address=f"{host}:{server.port}", url_file=str(url_file))
    return EmbeddedUi(server, task, client)
