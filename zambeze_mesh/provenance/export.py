"""Export a campaign's crate through the public ``Campaigns`` API."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from zambeze_mesh.errors import InvalidInput, ZmeshError
from zambeze_mesh.provenance.crate import DEFAULT_LICENSE, AgentInfo, build_crate
from zambeze_mesh.provenance.history import history_of

if TYPE_CHECKING:
    from zambeze_mesh.data.client import DataClient
    from zambeze_mesh.v1 import campaigns_pb2

DEFAULT_DATA_BYTES = 100 * 2**20
"""Default bound on the output bytes copied into a crate with ``with_data``."""


class _Member(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def plugins(self) -> Sequence[str]: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


class _Members(Protocol):
    @property
    def members(self) -> Sequence[_Member]: ...


class CampaignsSource(Protocol):
    """What an export reads through the ``Campaigns`` API: a
    :class:`~zambeze_mesh.campaign.client.Client` is one."""

    async def provenance_record(
        self, campaign_id: str, *, check_outputs: bool = True
    ) -> campaigns_pb2.ProvenanceRecord:
        """The campaign's whole provenance record."""
        ...

    async def list_members(self) -> _Members:
        """The mesh members as the connected agent sees them."""
        ...


async def export_crate(
    campaign_id: str,
    out: str | os.PathLike[str],
    *,
    client: CampaignsSource,
    license: str = DEFAULT_LICENSE,
    check_outputs: bool = True,
    with_data: DataClient | None = None,
    max_data_bytes: int = DEFAULT_DATA_BYTES,
) -> Path:
    """Write the Provenance Run Crate of ``campaign_id`` to ``out`` (a directory or
    ``.zip``); returns ``out``.

    ``client`` (a :class:`~zambeze_mesh.campaign.client.Client`) reaches the mesh: the
    record comes from the campaign's monitor (``GetProvenance``; the caller must
    be allowed to ``Get`` the campaign), the agents' labels and plugins from
    ``ListMembers``. With ``check_outputs`` the monitor first checks that every
    recorded output still exists with its sha256; the crate says which do not.
    With ``with_data`` (a :class:`~zambeze_mesh.data.client.DataClient`, e.g.
    ``DataClient.from_home(home)`` on an agent's host), output files are fetched
    into the crate, smallest first, up to ``max_data_bytes`` in total; only copies
    whose sha256 is the recorded one are included.
    Raises ``NotFound`` for an unknown campaign, ``InvalidInput`` for a bad ``out``.
    """
    if max_data_bytes < 0:
        raise InvalidInput("max_data_bytes must be >= 0")
    record = await client.provenance_record(campaign_id, check_outputs=check_outputs)
    agents: dict[str, AgentInfo] = {}
    try:
        members = await client.list_members()
    except ZmeshError:
        members = None  # the crate names the agents without their labels
    if members is not None:
        for m in members.members:
            agents[m.name] = AgentInfo(m.name, tuple(m.plugins), dict(m.labels))
    with tempfile.TemporaryDirectory(prefix="zmesh-crate-data-") as tmp:
        included: dict[str, Path] = {}
        if with_data is not None:
            included = await fetch_outputs(record, with_data, Path(tmp), max_data_bytes)
        return await asyncio.to_thread(
            build_crate, record, agents, license=license, out=out, included=included
        )


async def fetch_outputs(
    record: campaigns_pb2.ProvenanceRecord, data: DataClient, into: Path, max_bytes: int
) -> dict[str, Path]:
    """Fetch the recorded output files (smallest first, ``max_bytes`` in all) whose
    sha256 is still the recorded one; returns ``{uri: local copy}``."""
    from zambeze_mesh.data.catalog import sha256_file

    outputs = {o.uri: o for a in history_of(record).attempts for o in a.outputs}
    got: dict[str, Path] = {}
    total = 0
    for i, ref in enumerate(sorted(outputs.values(), key=lambda r: (r.size or 0, r.uri))):
        size = ref.size or 0
        if total + size > max_bytes:
            break
        holder, _, path = ref.uri.partition("://")
        dest = into / f"{i}"
        try:
            await data.fetch(holder, path, dest)
        except ZmeshError:
            continue  # gone or refused: the crate describes it by its URI only
        if await asyncio.to_thread(sha256_file, dest) != ref.sha256:
            continue
        got[ref.uri] = dest
        total += size
    return got
