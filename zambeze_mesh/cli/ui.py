"""``zmesh ui``: serve the web view of the local agent (its Unix socket, Campaigns API)."""

from __future__ import annotations

import sys
import webbrowser

from zambeze_mesh.campaign.client import Client
from zambeze_mesh.errors import FailedPrecondition
from zambeze_mesh.settings.home import Home


def serve_ui(home: Home, host: str, port: int, open_browser: bool) -> int:
    """Serve until Ctrl-C, printing the URL (with its access token) once listening."""
    from zambeze_mesh.ui.server import UiServer

    server = UiServer(Client(f"unix:{home.socket}"), host=host, port=port)  # checks host, port
    if not home.socket.exists():
        server.close()
        raise FailedPrecondition(
            f"no agent socket at {home.socket}: start the agent first (`zmesh agent start`)"
        )

    def ready(url: str) -> None:
        print(f"zmesh ui: serving the mesh of {home.root} at", flush=True)
        print(f"    {url}", flush=True)
        print("(the token in the URL is the password; Ctrl-C to stop)", file=sys.stderr, flush=True)
        if open_browser:
            webbrowser.open(url)

    try:
        server.run(ready)
    except KeyboardInterrupt:
        pass
    return 0
