"""The reporter on the in-memory Scheduling transport, with a manual clock.

A real outbox (SQLite), the agent's real SchedulingService on the monitor's side (so
reports are checked and acknowledged as over gRPC), a journal stand-in behind it, and
no sockets; time moves only when the test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.inproc import wait_until
from zambeze_mesh.agent import reporter as reporter_mod
from zambeze_mesh.agent.campaign_wire import event
from zambeze_mesh.agent.reporter import Reporter
from zambeze_mesh.agent.servicers.scheduling import SchedulingService
from zambeze_mesh.clock import ManualClock
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.store.db import Store
from zambeze_mesh.transport.scheduling import MemorySchedulingNetwork, ReportLink


class Journal:
    """The monitor's journal: records events; ``gate`` held shut = no acknowledgement."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (contractor, activity)
        self.gate = asyncio.Event()
        self.gate.set()

    async def report(self, contractor: str, events: list[Any]) -> None:
        await self.gate.wait()
        self.seen.extend((contractor, e.activity) for e in events)


class Counting:
    """The contractor's transport, counting the report streams it opens."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.opened = 0

    def open_reports(self, to: str) -> ReportLink:
        link = self.inner.open_reports(to)
        self.opened += 1
        return link  # type: ignore[no-any-return]


class Mesh:
    def __init__(self, root: Path) -> None:
        self.net = MemorySchedulingNetwork()
        self.journal = Journal()
        svc = SchedulingService("mon")
        svc.attach(object(), self.journal)  # type: ignore[arg-type]
        self.net.serve("mon", svc)
        self.clock = ManualClock()
        self.store = Store(root / "agent.db")
        self.transport = Counting(self.net.transport("con"))
        self.rep = Reporter(
            name="con",
            store=self.store,
            transport=self.transport,  # type: ignore[arg-type]
            clock=self.clock,
        )

    def emit(self, first: int, n: int) -> None:
        for i in range(first, first + n):
            self.rep.emit("mon", event("c1", f"a{i}", "SUCCEEDED", attempt=1), final=True)

    def outbox(self) -> int:
        return len(cstore.outbox_pending(self.store, 1_000_000))

    def delivered(self) -> set[str]:
        return {a for _, a in self.journal.seen}

    def all_acked(self) -> bool:
        return self.rep.unacknowledged() == 0 and self.outbox() == 0


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    m = Mesh(tmp_path)
    m.rep.start()
    try:
        yield m
    finally:
        m.journal.gate.set()
        await m.rep.close()
        m.store.close()


async def test_reports_reach_the_monitor_as_this_contractor(mesh: Mesh) -> None:
    mesh.emit(0, 30)
    await wait_until(mesh.all_acked, 10, "every event acknowledged")
    assert [c for c, _ in mesh.journal.seen] == ["con"] * 30
    assert [a for _, a in mesh.journal.seen] == [f"a{i}" for i in range(30)]
    assert mesh.transport.opened == 1


async def test_overdue_acknowledgement_reopens_the_stream_when_the_clock_says_so(
    mesh: Mesh,
) -> None:
    mesh.journal.gate.clear()  # the monitor takes reports but does not answer
    mesh.emit(0, 3)
    await wait_until(lambda: mesh.outbox() == 3, 10, "events written and sent")
    mesh.emit(3, 1)
    await asyncio.sleep(0.2)
    assert mesh.transport.opened == 1  # no time has passed: still waiting
    assert mesh.journal.seen == []
    mesh.clock.advance(reporter_mod.ACK_TIMEOUT_S + 1)
    mesh.emit(4, 1)  # wakes the reporter, which now sees the overdue report
    await wait_until(lambda: mesh.transport.opened == 2, 5, "a new stream")
    mesh.journal.gate.set()  # the monitor answers again
    await wait_until(mesh.all_acked, 10, "everything resent and acknowledged")
    assert mesh.delivered() == {f"a{i}" for i in range(5)}


async def test_a_cut_link_keeps_events_until_it_heals(mesh: Mesh) -> None:
    mesh.emit(0, 2)
    await wait_until(mesh.all_acked, 10, "the first events")
    mesh.net.cut("con", "mon")
    mesh.emit(2, 4)
    await wait_until(lambda: mesh.outbox() == 4, 10, "events kept in the outbox")
    await asyncio.sleep(0.2)
    assert mesh.delivered() == {"a0", "a1"}
    mesh.net.heal()
    mesh.clock.advance(reporter_mod.BACKOFF_MAX_S + 1)  # the retry is due
    mesh.emit(6, 1)
    await wait_until(mesh.all_acked, 10, "delivery after the link healed")
    assert mesh.delivered() == {f"a{i}" for i in range(7)}
