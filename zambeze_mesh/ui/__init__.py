"""``zmesh ui``: a live web view of the mesh and its campaigns.

Built only on the public ``Campaigns`` API (through the agent's Unix socket):
members, campaigns, a campaign's DAG and events, cancel. Needs the ``ui`` extra
(Starlette and uvicorn); the page is plain HTML/CSS/JS shipped in ``static/``.
"""

from zambeze_mesh.ui.server import UiServer, ui_url

__all__ = ["UiServer", "ui_url"]
