"""One suite, three Scheduling transports: gRPC (mTLS on 127.0.0.1), in-process, in-memory.

Behind each transport is the agent's real :class:`SchedulingService` (the checks every
transport must share: the request names its caller, work is scoped to it); the
contractor and monitor behind it are recording stand-ins, since what is under test is
delivery: who the callee sees as caller, replies, order, errors and broken streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from zambeze_mesh.agent.campaign_wire import event, key_of
from zambeze_mesh.agent.servicers.scheduling import SchedulingService, SchedulingServicer
from zambeze_mesh.agent.servicers.streams import ServedStreams
from zambeze_mesh.errors import NotPermitted, Unavailable, ZmeshError
from zambeze_mesh.scheduling import Bid
from zambeze_mesh.security import (
    AuthorizationInterceptor,
    Identity,
    MeshCA,
    channel_credentials,
    der_to_pem,
    key_to_pem,
    server_credentials,
)
from zambeze_mesh.transport.channels import ChannelPool
from zambeze_mesh.transport.scheduling import (
    InProcessScheduling,
    MemorySchedulingNetwork,
    Routed,
    SchedulingTransport,
)
from zambeze_mesh.transport.scheduling_grpc import GrpcScheduling
from zambeze_mesh.v1 import scheduling_pb2 as pb
from zambeze_mesh.v1 import scheduling_pb2_grpc

KINDS = ["grpc", "inprocess", "memory"]


class Contractor:
    """Records what reaches the contractor; bids a fixed estimate, accepts awards."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.broken = False

    def bids(self, req: pb.CallForProposalsRequest) -> list[Bid]:
        if self.broken:
            raise RuntimeError("a bug in the contractor")
        self.calls.append(("bids", req.monitor, *(t.activity for t in req.tenders)))
        return [Bid(key=key_of(t), estimate_s=1.5) for t in req.tenders]

    def award(self, req: pb.AwardRequest) -> list[pb.AwardDecision]:
        self.calls.append(("award", req.monitor, *(i.tender.activity for i in req.items)))
        return [
            pb.AwardDecision(
                campaign_id=i.tender.campaign_id,
                activity=i.tender.activity,
                attempt=i.tender.attempt,
                accepted=True,
            )
            for i in req.items
        ]

    async def cancel(self, refs: list[pb.ActivityRef], monitor: str) -> int:
        self.calls.append(("cancel", monitor, *(r.activity for r in refs)))
        return len(refs)


class Monitor:
    """Records the reports it journals; can be told to fail (a journal that is down)."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, list[str]]] = []
        self.fail_after: int | None = None

    async def report(self, contractor: str, events: list[Any]) -> None:
        if self.fail_after is not None and len(self.reports) >= self.fail_after:
            raise Unavailable("journal unavailable")
        self.reports.append((contractor, [e.activity for e in events]))


@dataclass
class Side:
    """The agent called (its service and stand-ins) and the transport of the caller."""

    caller: str
    callee: str
    transport: SchedulingTransport
    contractor: Contractor
    monitor: Monitor
    service: SchedulingService
    cleanup: list[Callable[[], Any]] = field(default_factory=list)


def _service(name: str) -> tuple[SchedulingService, Contractor, Monitor]:
    svc = SchedulingService(name)
    c, m = Contractor(), Monitor()
    svc.attach(c, m)  # type: ignore[arg-type]
    return svc, c, m


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create("alpha")


async def _grpc_side(ca: MeshCA) -> Side:
    svc, c, m = _service("con")
    key, der = ca.issue(Identity.agent("alpha", "con"), ["127.0.0.1"])
    server = grpc.aio.server(interceptors=[AuthorizationInterceptor("alpha", ca.cert)])
    scheduling_pb2_grpc.add_SchedulingServicer_to_server(
        SchedulingServicer(svc, ServedStreams()), server
    )
    creds = server_credentials(key_to_pem(key), der_to_pem(der), ca.cert_pem)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    ckey, cder = ca.issue(Identity.agent("alpha", "mon"), ["127.0.0.1"])
    pool = ChannelPool(
        channel_credentials(key_to_pem(ckey), der_to_pem(cder), ca.cert_pem), 4 << 20
    )
    address = f"127.0.0.1:{port}"
    transport = GrpcScheduling(pool, {"con": address}.get, timeout=5.0)
    side = Side("mon", "con", transport, c, m, svc)
    side.cleanup = [pool.close, lambda: server.stop(None)]
    return side


@pytest.fixture(params=KINDS)
async def side(request: pytest.FixtureRequest, ca: MeshCA) -> AsyncIterator[Side]:
    if request.param == "grpc":
        s = await _grpc_side(ca)
    elif request.param == "inprocess":
        svc, c, m = _service("a1")
        s = Side("a1", "a1", InProcessScheduling("a1", svc), c, m, svc)
    else:
        net = MemorySchedulingNetwork()
        svc, c, m = _service("con")
        net.serve("con", svc)
        s = Side("mon", "con", net.transport("mon"), c, m, svc)
    try:
        yield s
    finally:
        for f in s.cleanup:
            await f()


def tender(activity: str) -> pb.Tender:
    return pb.Tender(campaign_id="c1", activity=activity, attempt=1)


def report(contractor: str, first: int, n: int) -> pb.ReportStatusRequest:
    return pb.ReportStatusRequest(
        contractor=contractor,
        events=[
            pb.ContractorEvent(outbox_seq=i, event=event("c1", f"a{i}", "RUNNING", attempt=1))
            for i in range(first, first + n)
        ],
    )


async def test_calls_reach_the_callee_as_the_caller(side: Side) -> None:
    t = side.transport
    cfp = pb.CallForProposalsRequest(monitor=side.caller, tenders=[tender("a"), tender("b")])
    resp = await t.call_for_proposals(side.callee, cfp)
    assert resp.bidder == side.callee
    assert [(b.activity, b.estimate_s) for b in resp.bids] == [("a", 1.5), ("b", 1.5)]
    award = pb.AwardRequest(monitor=side.caller, items=[pb.AwardItem(tender=tender("a"))])
    decisions = (await t.award(side.callee, award)).decisions
    assert [(d.activity, d.accepted) for d in decisions] == [("a", True)]
    cancel = pb.CancelActivitiesRequest(
        monitor=side.caller, activities=[pb.ActivityRef(campaign_id="c1", activity="a")]
    )
    assert (await t.cancel(side.callee, cancel)).cancelled == 1
    assert side.contractor.calls == [
        ("bids", side.caller, "a", "b"),
        ("award", side.caller, "a"),
        ("cancel", side.caller, "a"),
    ]


async def test_a_request_naming_someone_else_is_refused(side: Side) -> None:
    t = side.transport
    with pytest.raises(NotPermitted):
        await t.call_for_proposals(
            side.callee, pb.CallForProposalsRequest(monitor="mallory", tenders=[tender("a")])
        )
    with pytest.raises(NotPermitted):
        await t.award(side.callee, pb.AwardRequest(monitor="mallory"))
    with pytest.raises(NotPermitted):
        await t.cancel(side.callee, pb.CancelActivitiesRequest(monitor="mallory"))
    link = t.open_reports(side.callee)
    await link.send(report("mallory", 1, 1))
    with pytest.raises(NotPermitted):
        async for _ in link.acks():
            pass
    link.close()
    assert side.contractor.calls == [] and side.monitor.reports == []


async def test_an_unknown_agent_is_unavailable(side: Side) -> None:
    t = side.transport
    req = pb.CallForProposalsRequest(monitor=side.caller, tenders=[tender("a")])
    with pytest.raises(Unavailable):
        await t.call_for_proposals("nobody", req)
    with pytest.raises(Unavailable):
        await t.award("nobody", pb.AwardRequest(monitor=side.caller))
    with pytest.raises(Unavailable):
        await t.cancel("nobody", pb.CancelActivitiesRequest(monitor=side.caller))
    with pytest.raises(Unavailable):
        t.open_reports("nobody")


async def test_a_bug_in_the_callee_is_an_error_not_a_crash(side: Side) -> None:
    side.contractor.broken = True
    req = pb.CallForProposalsRequest(monitor=side.caller, tenders=[tender("a")])
    with pytest.raises(ZmeshError, match="internal error"):
        await side.transport.call_for_proposals(side.callee, req)


async def test_report_stream_acknowledges_in_order(side: Side) -> None:
    link = side.transport.open_reports(side.callee)
    for first in range(0, 50, 5):  # ten reports out before any acknowledgement is read
        await link.send(report(side.caller, first, 5))
    acked: list[int] = []
    async with asyncio.timeout(10):
        async for resp in link.acks():
            acked.extend(resp.acked)
            if len(acked) == 50:
                break
    link.close()
    assert acked == list(range(50))
    assert [c for c, _ in side.monitor.reports] == [side.caller] * 10
    assert [a for _, acts in side.monitor.reports for a in acts] == [f"a{i}" for i in range(50)]


async def test_a_failing_monitor_breaks_the_stream(side: Side) -> None:
    side.monitor.fail_after = 1
    link = side.transport.open_reports(side.callee)
    await link.send(report(side.caller, 0, 2))
    await link.send(report(side.caller, 2, 2))
    acked: list[int] = []
    async with asyncio.timeout(10):
        with pytest.raises(Unavailable, match="journal unavailable"):
            async for resp in link.acks():
                acked.extend(resp.acked)
    assert acked == [0, 1]  # the second report was not acknowledged
    link.close()


async def test_a_closed_stream_ends_its_acknowledgements(side: Side) -> None:
    link = side.transport.open_reports(side.callee)
    await link.send(report(side.caller, 0, 1))
    got: list[int] = []
    async with asyncio.timeout(10):
        async for resp in link.acks():
            got.extend(resp.acked)
            link.close()
    assert got == [0]


# ---------------------------------------------------------------- not shared by gRPC


async def test_in_process_answers_outside_the_callers_step() -> None:
    svc, c, _ = _service("a1")
    t = InProcessScheduling("a1", svc)
    reply = t.call_for_proposals(
        "a1", pb.CallForProposalsRequest(monitor="a1", tenders=[tender("a")])
    )
    assert c.calls == []  # nothing ran yet: the answer comes when awaited
    await reply
    assert c.calls == [("bids", "a1", "a")]


async def test_in_process_reaches_only_its_own_agent() -> None:
    svc, _, _ = _service("a1")
    t = InProcessScheduling("a1", svc)
    with pytest.raises(Unavailable):
        await t.call_for_proposals("a2", pb.CallForProposalsRequest(monitor="a1"))


async def test_routed_sends_own_calls_in_process_and_the_rest_remotely() -> None:
    net = MemorySchedulingNetwork()
    own, own_c, _ = _service("a1")
    other, other_c, _ = _service("a2")
    net.serve("a2", other)
    t = Routed("a1", InProcessScheduling("a1", own), net.transport("a1"))
    for to in ("a1", "a2"):
        await t.call_for_proposals(
            to, pb.CallForProposalsRequest(monitor="a1", tenders=[tender(f"for-{to}")])
        )
    assert own_c.calls == [("bids", "a1", "for-a1")]
    assert other_c.calls == [("bids", "a1", "for-a2")]


async def test_memory_network_cut_and_heal() -> None:
    net = MemorySchedulingNetwork()
    svc, _c, m = _service("con")
    net.serve("con", svc)
    t = net.transport("mon")
    link = t.open_reports("con")
    acks = link.acks()
    await link.send(report("mon", 0, 1))
    async with asyncio.timeout(5):
        assert list((await anext(acks)).acked) == [0]
    net.cut("mon", "con")
    req = pb.CallForProposalsRequest(monitor="mon", tenders=[tender("a")])
    with pytest.raises(Unavailable):
        await t.call_for_proposals("con", req)
    await link.send(report("mon", 1, 1))
    async with asyncio.timeout(5):
        with pytest.raises(Unavailable):
            await anext(acks)  # the report after the cut never arrives
    assert [acts for _, acts in m.reports] == [["a0"]]
    with pytest.raises(Unavailable):
        await link.send(report("mon", 2, 1))
    net.heal()
    assert len((await t.call_for_proposals("con", req)).bids) == 1
    net.unserve("con")
    with pytest.raises(Unavailable):
        t.open_reports("con")


async def test_memory_network_copies_messages_as_the_wire_would() -> None:
    net = MemorySchedulingNetwork()
    svc, c, _ = _service("con")
    net.serve("con", svc)
    req = pb.AwardRequest(monitor="mon", items=[pb.AwardItem(tender=tender("a"))])
    seen: list[pb.AwardRequest] = []
    real = c.award

    def keep(r: pb.AwardRequest) -> list[pb.AwardDecision]:
        seen.append(r)
        return real(r)

    c.award = keep  # type: ignore[method-assign]
    await net.transport("mon").award("con", req)
    assert seen[0] == req and seen[0] is not req
