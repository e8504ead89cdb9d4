"""zambeze-mesh: cross-facility scientific workflows on a gRPC peer-to-peer agent mesh.

The user API is re-exported here lazily (``import zambeze_mesh`` stays cheap)::

    import zambeze_mesh as zm

    campaign = zm.Campaign("My Science Campaign!")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from zambeze_mesh.campaign.activities import (
        Activity as Activity,
        PythonActivity as PythonActivity,
        Requirements as Requirements,
        ShellActivity as ShellActivity,
        TransferActivity as TransferActivity,
        WFActivity as WFActivity,
    )
    from zambeze_mesh.campaign.campaign import Campaign as Campaign
    from zambeze_mesh.campaign.client import Client as Client
    from zambeze_mesh.campaign.client import connect as connect
    from zambeze_mesh.campaign.futures import ActivityFailed as ActivityFailed
    from zambeze_mesh.campaign.futures import ActivityResult as ActivityResult
    from zambeze_mesh.campaign.refs import OutputRef as OutputRef


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zambeze_mesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
