"""Run the web view: uvicorn serving :func:`~zambeze_mesh.ui.app.create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from zambeze_mesh.campaign.client import Client
from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.ui.auth import new_token

__all__ = ["UiServer", "ui_url"]


def ui_url(host: str, port: int, token: str) -> str:
    """The URL to open: the page with its access token."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise InvalidInput(f"--host must be an IP address, not {host!r}") from None
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port must be 0-65535, not {port}")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


@dataclass
class UiServer:
    """The web view of the agent behind ``client``, on ``host:port`` (0 = any free port).

    ``token`` defaults to a fresh random one; :attr:`url` is known once bound.
    """

    client: Client
    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    #: Let uvicorn take SIGINT/SIGTERM (a standalone server); off inside the agent.
    handle_signals: bool = True

    def __post_init__(self) -> None:
        self.token = self.token or new_token()
        self._sock = _bind(self.host, self.port)
        self.port = int(self._sock.getsockname()[1])

    def close(self) -> None:
        """Release the listening socket without serving."""
        self._sock.close()

    @property
    def url(self) -> str:
        """The page's URL, token included."""
        return ui_url(self.host, self.port, self.token)

    async def serve(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until cancelled; ``on_ready(url)`` once listening."""
        try:
            import uvicorn

            from zambeze_mesh.ui.app import create_app
        except ImportError as exc:
            raise FailedPrecondition(
                f"the web view needs the `ui` extra: pip install 'zambeze-mesh[ui]' ({exc.name})"
            ) from None
        config = uvicorn.Config(
            create_app(self.client, self.token),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        if not self.handle_signals:
            server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        if on_ready is not None:
            on_ready(self.url)
        try:
            await server.serve(sockets=[self._sock])
        finally:
            self._sock.close()

    def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in this thread until Ctrl-C."""
        asyncio.run(self.serve(on_ready))
