"""The user model: campaigns, activities, the client and the futures.

>>> import zambeze_mesh as zm
>>> campaign = zm.Campaign("demo")
>>> hello = zm.ShellActivity(name="hello", cmd="echo hello")
>>> campaign.add_activities([hello])
"""

from __future__ import annotations

from zambeze_mesh.campaign.activities import (
    Activity,
    PythonActivity,
    Requirements,
    ShellActivity,
    TransferActivity,
    WFActivity,
)
from zambeze_mesh.campaign.campaign import Campaign
from zambeze_mesh.campaign.client import Client, connect, default_client, set_default_client
from zambeze_mesh.campaign.futures import ActivityFailed, ActivityFuture, ActivityResult
from zambeze_mesh.campaign.refs import OutputRef
from zambeze_mesh.campaign.wire import CampaignStatus, Event, Members, SubmitResult

__all__ = [
    "Activity",
    "ActivityFailed",
    "ActivityFuture",
    "ActivityResult",
    "Campaign",
    "CampaignStatus",
    "Client",
    "Event",
    "Members",
    "OutputRef",
    "PythonActivity",
    "Requirements",
    "ShellActivity",
    "SubmitResult",
    "TransferActivity",
    "WFActivity",
    "connect",
    "default_client",
    "set_default_client",
]
