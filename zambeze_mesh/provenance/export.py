"""Export a campaign's crate through the public ``Campaigns`` API."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.provenance.crate import DEFAULT_LICENSE, AgentInfo, build_crate

if TYPE_CHECKING:
    from zambeze_mesh.campaign.client import Client


async def export_crate(
    campaign_id: str,
    out: str | os.PathLike[str],
    *,
    client: Client | None = None,
    license: str = DEFAULT_LICENSE,
    check_outputs: bool = True,
) -> Path:
    """Write the Provenance Run Crate of ``campaign_id`` to ``out`` (a directory or
    ``.zip``); returns ``out``.

    The record comes from the campaign's monitor (``GetProvenance``; the caller must
    be allowed to ``Get`` the campaign), the agents' labels and plugins from
    ``ListMembers``. With ``check_outputs`` the monitor first checks that every
    recorded output still exists with its sha256; the crate says which do not.
    Raises ``NotFound`` for an unknown campaign, ``InvalidInput`` for a bad ``out``.
    """
    from zambeze_mesh.campaign.client import default_client

    client = client or default_client()
    record = await client.provenance_record(campaign_id, check_outputs=check_outputs)
    agents: dict[str, AgentInfo] = {}
    try:
        members = await client.list_members()
    except ZmeshError:
        members = None  # the crate names the agents without their labels
    if members is not None:
        for m in members.members:
            agents[m.name] = AgentInfo(m.name, tuple(m.plugins), dict(m.labels))
    return await asyncio.to_thread(build_crate, record, agents, license=license, out=out)
