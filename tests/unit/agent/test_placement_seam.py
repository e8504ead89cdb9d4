"""Placement over the in-memory Scheduling transport: three agents, no sockets.

The placement driver and the contract-net machine are the real ones; each agent's
calls are answered by the agent's real SchedulingService (caller checks) in front of a
contractor stand-in that bids a fixed estimate. The monitor's side is a stand-in that
records what placement tells it. Agent ``a0`` places; its own contractor is reached
in-process, the others through the in-memory network.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from tests.helpers.inproc import wait_until
from zambeze_mesh.agent.campaign_wire import key_of
from zambeze_mesh.agent.placement import Placement
from zambeze_mesh.agent.servicers.scheduling import SchedulingService
from zambeze_mesh.scheduling import ActivityDef, Bid, TenderKey
from zambeze_mesh.transport.scheduling import (
    InProcessScheduling,
    MemorySchedulingNetwork,
    Routed,
)
from zambeze_mesh.v1 import common_pb2
from zambeze_mesh.v1 import scheduling_pb2 as pb

NAMES = ("a0", "a1", "a2")


class Contractor:
    """Bids ``estimate`` on everything, accepts every award, records every call."""

    def __init__(self, estimate: float) -> None:
        self.estimate = estimate
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []

    def bids(self, req: pb.CallForProposalsRequest) -> list[Bid]:
        self.calls.append(("cfp", req.monitor, tuple(t.activity for t in req.tenders)))
        return [Bid(key=key_of(t), estimate_s=self.estimate) for t in req.tenders]

    def award(self, req: pb.AwardRequest) -> list[pb.AwardDecision]:
        self.calls.append(("award", req.monitor, tuple(i.tender.activity for i in req.items)))
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
        self.calls.append(("cancel", monitor, tuple(r.activity for r in refs)))
        return len(refs)


@dataclass
class MonitorStandIn:
    """What placement tells the monitor."""

    live: dict[str, Any] = field(default_factory=dict)
    placed_: list[tuple[TenderKey, str]] = field(default_factory=list)
    failed: list[tuple[TenderKey, str]] = field(default_factory=list)

    def placed(self, placements: list[tuple[TenderKey, str]]) -> None:
        self.placed_.extend(placements)

    def placement_deferred(self, items: list[tuple[TenderKey, str]]) -> None:
        pass

    def placement_failed(self, key: TenderKey, reason: str) -> None:
        self.failed.append((key, reason))


class Members:
    def __init__(self) -> None:
        caps = common_pb2.Capabilities(plugins=["shell"], slots=4, free_slots=4)
        self._members = [
            SimpleNamespace(
                name=n,
                status="alive",
                record=common_pb2.AgentRecord(name=n, capabilities=caps),
            )
            for n in NAMES
        ]

    def members(self) -> list[Any]:
        return list(self._members)

    def alive(self) -> list[Any]:
        return list(self._members)


def live(names: list[str]) -> Any:
    acts = {n: ActivityDef(name=n, kind="shell", plugin="shell") for n in names}
    rows = {n: SimpleNamespace(state="BIDDING", attempt=1, agent="", detail={}) for n in names}
    return SimpleNamespace(
        id="c1",
        state="RUNNING",
        owner="",
        acts=rows,
        dag=SimpleNamespace(activity=acts.__getitem__),
    )


class Mesh:
    def __init__(self, estimates: dict[str, float]) -> None:
        self.net = MemorySchedulingNetwork()
        self.contractors = {n: Contractor(estimates[n]) for n in NAMES}
        self.monitor = MonitorStandIn()
        services = {}
        for n in NAMES:
            svc = SchedulingService(n)
            svc.attach(self.contractors[n], object())  # type: ignore[arg-type]
            services[n] = svc
            if n != "a0":
                self.net.serve(n, svc)
        transport = Routed(
            "a0", InProcessScheduling("a0", services["a0"]), self.net.transport("a0")
        )
        self.placement = Placement(
            name="a0",
            mesh="m",
            max_message_bytes=4 << 20,
            monitor=self.monitor,  # type: ignore[arg-type]
            members=Members(),
            transport=transport,
        )

    def where(self) -> dict[str, str]:
        return {k.activity: agent for k, agent in self.monitor.placed_}


async def test_activities_go_to_the_best_bidder_and_everyone_sees_the_monitor() -> None:
    mesh = Mesh({"a0": 3.0, "a1": 1.0, "a2": 2.0})
    try:
        mesh.placement.offer(live(["x", "y"]), ["x", "y"])
        await wait_until(lambda: len(mesh.monitor.placed_) == 2, 10, "both placed")
        assert mesh.where() == {"x": "a1", "y": "a1"}
        for n in NAMES:  # every contractor, a0's own in-process one too, was asked
            assert ("cfp", "a0", ("x", "y")) in mesh.contractors[n].calls
        assert ("award", "a0", ("x", "y")) in mesh.contractors["a1"].calls
        assert not any(c[0] == "award" for n in ("a0", "a2") for c in mesh.contractors[n].calls)
    finally:
        await mesh.placement.close()


async def test_an_unreachable_agent_is_passed_over() -> None:
    mesh = Mesh({"a0": 3.0, "a1": 1.0, "a2": 2.0})
    mesh.net.cut("a0", "a1")
    try:
        mesh.placement.offer(live(["x"]), ["x"])
        await wait_until(lambda: len(mesh.monitor.placed_) == 1, 10, "placed")
        assert mesh.where() == {"x": "a2"}
        assert mesh.contractors["a1"].calls == []
    finally:
        await mesh.placement.close()


async def test_own_contractor_wins_in_process() -> None:
    mesh = Mesh({"a0": 0.5, "a1": 1.0, "a2": 2.0})
    try:
        mesh.placement.offer(live(["x"]), ["x"])
        await wait_until(lambda: len(mesh.monitor.placed_) == 1, 10, "placed")
        assert mesh.where() == {"x": "a0"}
        assert ("award", "a0", ("x",)) in mesh.contractors["a0"].calls
    finally:
        await mesh.placement.close()


async def test_cancel_reaches_each_holder_as_this_monitor() -> None:
    mesh = Mesh({"a0": 1.0, "a1": 1.0, "a2": 1.0})
    try:
        k = TenderKey("c1", "x", 1)
        mesh.placement.cancel_everywhere([k])
        await wait_until(
            lambda: all(("cancel", "a0", ("x",)) in mesh.contractors[n].calls for n in NAMES),
            10,
            "cancel everywhere",
        )
        mesh.net.cut("a0", "a2")
        mesh.placement.cancel_on([(TenderKey("c1", "y", 1), "a2")])  # logged, not raised
        await asyncio.sleep(0.1)
        assert not any(c[2] == ("y",) for c in mesh.contractors["a2"].calls)
    finally:
        await mesh.placement.close()
