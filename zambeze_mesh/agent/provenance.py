"""The monitor's side of provenance: ``Campaigns.GetProvenance``.

Everything comes from the monitor's own journal (the campaign as submitted and
every event, whose details carry the digests the contractors reported); the only
extra work is the optional check that recorded outputs still exist on their
agents, one ``Data.Stat`` per recorded file (bounded by :data:`MAX_CHECKS`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zambeze_mesh.errors import InvalidInput, NotFound, ZmeshError
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.v1 import campaigns_pb2, common_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.monitor import Monitor
    from zambeze_mesh.data.peers import LocalAgent
    from zambeze_mesh.store import Store

PAGE = 5000
"""Most events in one ``ProvenanceRecord``."""
MAX_CHECKS = 1000
"""Most output files checked on their agents for one request."""
CHECK_CONCURRENCY = 16
CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RecordedOutput:
    """One output file an event says an attempt produced."""

    activity: str
    attempt: int
    agent: str
    path: str
    size: int
    sha256: str


def recorded_outputs(events: list[common_pb2.Event]) -> list[RecordedOutput]:
    """The output files listed by the SUCCEEDED events (see ``agent/digests.py``)."""
    out = []
    for ev in events:
        if ev.state != common_pb2.ACTIVITY_STATE_SUCCEEDED or "outputs" not in ev.detail:
            continue
        base = ev.detail.get("outputs_dir", "")
        try:
            listed = json.loads(ev.detail["outputs"])
        except ValueError:
            continue
        for rel, size, sha in listed:
            path = f"{base.rstrip('/')}/{rel}"
            out.append(RecordedOutput(ev.activity, ev.attempt, ev.agent, path, int(size), sha))
    return out


async def provenance_record(
    *,
    monitor: Monitor,
    store: Store,
    mesh: str,
    source: LocalAgent,
    cid: str,
    after: int = 0,
    limit: int = 0,
    check: bool = False,
) -> campaigns_pb2.ProvenanceRecord:
    """Build one page of a campaign's provenance record (NotFound for an unknown id).

    From the campaign's ``monitor`` and the ``store`` that journals it; ``source`` is
    what a data client needs of this agent (to check outputs on their agents).
    """
    if limit < 0 or limit > PAGE:
        raise InvalidInput(f"limit must be between 0 and {PAGE}")
    status = monitor.status(cid)  # NotFound for an unknown id
    for act in status.activities:
        act.result = b""
    rec = campaigns_pb2.ProvenanceRecord(status=status, mesh=mesh)
    rows = store.read("SELECT finished_ms FROM campaigns WHERE id = ?", (cid,))
    if rows and rows[0]["finished_ms"] is not None:
        rec.finished_unix_ms = int(rows[0]["finished_ms"])
    req = cstore.load_request(store, cid)
    if req is not None:
        for spec in req.activities:
            if spec.WhichOneof("body") == "python" and spec.python.function:
                rec.function_sha256[spec.name] = hashlib.sha256(spec.python.function).hexdigest()
                spec.python.function = b""
            rec.activities.append(spec)
    size = limit or PAGE
    events = cstore.events_after(store, cid, after, size)
    for ev in events:
        ev.result = b""
    rec.events.extend(events)
    if len(events) == size and events[-1].seq < status.last_seq:
        rec.next_seq = events[-1].seq
    if check and after == 0:
        everything = list(events)
        while len(everything) and everything[-1].seq < status.last_seq:
            more = cstore.events_after(store, cid, everything[-1].seq, PAGE)
            if not more:
                break
            everything.extend(more)
        rec.outputs.extend(await check_outputs(source, recorded_outputs(everything)))
    return rec


async def check_outputs(
    source: LocalAgent, outputs: list[RecordedOutput]
) -> list[campaigns_pb2.OutputCheck]:
    """Stat each recorded output on its agent now (at most :data:`MAX_CHECKS`)."""
    from zambeze_mesh.data.client import DataClient

    client = DataClient(source)
    gate = asyncio.Semaphore(CHECK_CONCURRENCY)

    async def one(o: RecordedOutput) -> campaigns_pb2.OutputCheck:
        pb = campaigns_pb2.OutputCheck(
            activity=o.activity, attempt=o.attempt, agent=o.agent, path=o.path
        )
        async with gate:
            try:
                info = await asyncio.wait_for(client.stat(o.agent, o.path), CHECK_TIMEOUT_S)
            except NotFound:
                return pb
            except (ZmeshError, TimeoutError) as exc:
                pb.error = str(exc) or type(exc).__name__
                return pb
        pb.exists = True
        pb.size = info.size
        pb.sha256 = info.sha256
        return pb

    try:
        return list(await asyncio.gather(*(one(o) for o in outputs[:MAX_CHECKS])))
    finally:
        await client.close()
