"""zambeze-mesh: cross-facility scientific workflows on a gRPC peer-to-peer agent mesh.

The user API is re-exported here lazily (``import zambeze_mesh`` stays cheap)::

    import zambeze_mesh

    campaign = zm.Campaign("My Science Campaign!")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zambeze_mesh.version import __version__

_LAZY = {
    "Campaign": "zambeze_mesh.campaign.campaign",
    "Activity": "zambeze_mesh.campaign.activities",
    "ShellActivity": "zambeze_mesh.campaign.activities",
    "PythonActivity": "zambeze_mesh.campaign.activities",
    "WFActivity": "zambeze_mesh.campaign.activities",
    "TransferActivity": "zambeze_mesh.campaign.activities",
    "Requirements": "zambeze_mesh.campaign.activities",
    "connect": "zambeze_mesh.campaign.client",
    "Client": "zambeze_mesh.campaign.client",
    "ActivityFailed": "zambeze_mesh.campaign.futures",
    "ActivityResult": "zambeze_mesh.campaign.futures",
    "OutputRef": "zambeze_mesh.campaign.refs",
}

__all__ = [
    "Activity",
    "ActivityFailed",
    "ActivityResult",
    "Campaign",
    "Client",
    "OutputRef",
    "PythonActivity",
    "Requirements",
    "ShellActivity",
    "TransferActivity",
    "WFActivity",
    "__version__",
    "connect",
]

if TYPE_CHECKING:
    from zambeze_mesh.campaign.activities import (
        Activity,
        PythonActivity,
        Requirements,
        ShellActivity,
        TransferActivity,
        WFActivity,
    )
    from zambeze_mesh.campaign.campaign import Campaign
    from zambeze_mesh.campaign.client import Client, connect
    from zambeze_mesh.campaign.futures import ActivityFailed, ActivityResult
    from zambeze_mesh.campaign.refs import OutputRef


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zambeze_mesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
