"""The contractor's reporter against a real gRPC monitor endpoint on 127.0.0.1.

The monitor side is a small Scheduling servicer whose behaviour each test chooses
(ack everything, drop the stream, never ack, serve no ReportStream); the reporter
under test is the real one, over the real gRPC Scheduling transport, with a real
SQLite outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers.inproc import wait_until
from zambeze_mesh.agent import reporter as reporter_mod
from zambeze_mesh.agent.campaign_wire import event
from zambeze_mesh.agent.reporter import Reporter
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.store.db import Store
from zambeze_mesh.transport.scheduling_grpc import GrpcScheduling
from zambeze_mesh.v1 import scheduling_pb2, scheduling_pb2_grpc


class Monitor(scheduling_pb2_grpc.SchedulingServicer):
    """A monitor endpoint that records what it journals (by outbox seq)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, int]] = []  # (outbox seq, activity, state)
        self.streams = 0
        self.break_after: int | None = None  # abort a stream after this many requests
        self.never_ack = False
        self.stream_requests = 0

    def _take(self, req: scheduling_pb2.ReportStatusRequest) -> list[int]:
        for ce in req.events:
            self.seen.append((ce.outbox_seq, ce.event.activity, ce.event.state))
        return [ce.outbox_seq for ce in req.events]

    async def ReportStatus(self, request: Any, context: Any) -> Any:
        return scheduling_pb2.ReportStatusResponse(acked=self._take(request))

    async def ReportStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        self.streams += 1
        async for req in request_iterator:
            self.stream_requests += 1
            if self.break_after is not None and self.stream_requests > self.break_after:
                self.break_after = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "monitor restarting")
            acked = self._take(req)
            if not self.never_ack:
                yield scheduling_pb2.ReportStatusResponse(acked=acked)


class NoStream(Monitor):
    """A monitor endpoint that does not serve ReportStream (only the unary call)."""

    async def ReportStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        self.streams += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield  # pragma: no cover


@dataclass
class Member:
    name: str
    address: str
    status: str = "alive"


@dataclass
class Gossip:
    members_: list[Member] = field(default_factory=list)

    def members(self) -> list[Member]:
        return list(self.members_)

    def address_of(self, name: str) -> str | None:
        for m in self.members_:
            if m.name == name and m.status != "left":
                return m.address
        return None


class Channels:
    """Plain channels to the test monitor (the agent's pool would use mTLS)."""

    def __init__(self) -> None:
        self._chans: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        if address not in self._chans:
            self._chans[address] = grpc.aio.insecure_channel(address)
        return self._chans[address]

    async def close(self) -> None:
        for ch in self._chans.values():
            await ch.close()


class AgentStandIn:
    """What the reporter is built from: a name, a store and a Scheduling transport."""

    def __init__(self, root: Path, gossip: Gossip) -> None:
        self.name = "contractor"
        self.store = Store(root / "agent.db")
        self.gossip = gossip
        self.channels = Channels()
        self.transport = GrpcScheduling(self.channels, gossip.address_of)

    def reporter(self) -> Reporter:
        return Reporter(name=self.name, store=self.store, transport=self.transport)


async def serve(servicer: Monitor) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    scheduling_pb2_grpc.add_SchedulingServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def emit_run(rep: Reporter, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        rep.emit("mon", event("c1", f"a{i}", "RUNNING", attempt=1, agent="contractor"))
        rep.emit(
            "mon", event("c1", f"a{i}", "SUCCEEDED", attempt=1, agent="contractor"), final=True
        )


def outbox_rows(agent: AgentStandIn) -> int:
    return len(cstore.outbox_pending(agent.store, 1_000_000))


def all_acked(agent: AgentStandIn, rep: Reporter) -> bool:
    """Nothing waits in memory or in the outbox."""
    return rep.unacknowledged() == 0 and outbox_rows(agent) == 0


async def started(tmp_path: Path, servicer: Monitor, known: bool = True) -> tuple[Any, ...]:
    server, address = await serve(servicer)
    gossip = Gossip([Member("mon", address)] if known else [])
    agent = AgentStandIn(tmp_path, gossip)
    rep = agent.reporter()
    rep.start()
    return server, address, gossip, agent, rep


async def stop(server: grpc.aio.Server, agent: AgentStandIn, rep: Reporter) -> None:
    await rep.close()
    await agent.channels.close()
    await server.stop(None)
    agent.store.close()


def in_order(seen: list[tuple[int, str, int]]) -> list[int]:
    """Outbox seqs seen, duplicates removed, in first-seen order."""
    out: list[int] = []
    for seq, _, _ in seen:
        if seq not in out:
            out.append(seq)
    return out


async def test_stream_delivers_in_order_and_empties_the_outbox(tmp_path: Path) -> None:
    mon = Monitor()
    server, _, _, agent, rep = await started(tmp_path, mon)
    try:
        emit_run(rep, 300)
        await wait_until(lambda: len(mon.seen) >= 600, 10, "600 events at the monitor")
        seqs = [s for s, _, _ in mon.seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == 600
        await wait_until(lambda: all_acked(agent, rep), 10, "an empty outbox")
        assert mon.streams == 1
        assert rep.unacknowledged() == 0
    finally:
        await stop(server, agent, rep)


async def test_broken_stream_resends_what_was_not_acknowledged(tmp_path: Path) -> None:
    mon = Monitor()
    mon.break_after = 1  # the second report kills the stream before it is journaled
    server, _, _, agent, rep = await started(tmp_path, mon)
    try:
        emit_run(rep, 1)
        await wait_until(lambda: len(mon.seen) >= 2, 10, "the first report")
        emit_run(rep, 50, start=1)
        await wait_until(lambda: len(set(in_order(mon.seen))) >= 102, 10, "every event")
        assert in_order(mon.seen) == sorted(in_order(mon.seen))
        assert mon.streams >= 2
        await wait_until(lambda: all_acked(agent, rep), 10, "an empty outbox")
    finally:
        await stop(server, agent, rep)


async def test_overdue_acknowledgement_reconnects_and_resends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reporter_mod, "ACK_TIMEOUT_S", 0.5)
    mon = Monitor()
    mon.never_ack = True
    server, _, _, agent, rep = await started(tmp_path, mon)
    try:
        emit_run(rep, 5)
        await wait_until(lambda: mon.streams >= 2, 10, "a second stream after the timeout")
        assert outbox_rows(agent) == 10  # nothing acknowledged, nothing forgotten
        mon.never_ack = False
        await wait_until(lambda: all_acked(agent, rep), 10, "an empty outbox")
    finally:
        await stop(server, agent, rep)


async def test_monitor_without_stream_keeps_every_event(tmp_path: Path) -> None:
    """ReportStream is the only way reports travel: a monitor that refuses it gets
    nothing (not the unary call), and every event stays in the outbox, retried."""
    mon = NoStream()
    server, _, _, agent, rep = await started(tmp_path, mon)
    try:
        emit_run(rep, 20)
        await wait_until(lambda: mon.streams >= 2, 10, "the stream retried")
        assert mon.seen == []
        assert outbox_rows(agent) == 40 and rep.unacknowledged() == 40
    finally:
        await stop(server, agent, rep)


async def test_unknown_monitor_keeps_events_until_it_appears(tmp_path: Path) -> None:
    mon = Monitor()
    server, address, gossip, agent, rep = await started(tmp_path, mon, known=False)
    try:
        emit_run(rep, 3)
        await asyncio.sleep(0.5)
        assert mon.seen == [] and outbox_rows(agent) == 6
        gossip.members_.append(Member("mon", address))
        await wait_until(lambda: all_acked(agent, rep), 10, "delivery once the monitor is known")
        assert len(in_order(mon.seen)) == 6
    finally:
        await stop(server, agent, rep)


async def test_restart_sends_what_the_previous_run_left(tmp_path: Path) -> None:
    mon = Monitor()
    server, address, gossip, agent, rep = await started(tmp_path, mon, known=False)
    emit_run(rep, 4)
    await rep.close()  # nothing delivered: the events are in the outbox
    assert outbox_rows(agent) == 8
    gossip.members_.append(Member("mon", address))
    rep2 = agent.reporter()
    rep2.start()
    try:
        await wait_until(lambda: all_acked(agent, rep2), 10, "the old outbox delivered")
        assert len(in_order(mon.seen)) == 8
    finally:
        await stop(server, agent, rep2)


async def test_events_wait_in_memory_while_both_reports_are_unacknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MAX_OUTSTANDING reports in flight, new events are not written one commit
    at a time: they wait in memory and go out (and into the outbox) together."""
    monkeypatch.setattr(reporter_mod, "ACK_TIMEOUT_S", 1.5)
    mon = Monitor()
    mon.never_ack = True
    server, _, _, agent, rep = await started(tmp_path, mon)
    try:
        for i in range(reporter_mod.MAX_OUTSTANDING):
            emit_run(rep, 1, start=i)
            want = 2 * (i + 1)
            await wait_until(lambda: len(mon.seen) >= want, 10, f"report {want // 2}")  # noqa: B023
        in_outbox = outbox_rows(agent)
        emit_run(rep, 5, start=10)
        await asyncio.sleep(0.3)
        assert outbox_rows(agent) == in_outbox  # waiting in memory, not yet written
        assert rep.unacknowledged() == in_outbox + 10
        mon.never_ack = False  # the overdue stream is replaced and everything resent
        await wait_until(lambda: all_acked(agent, rep), 20, "everything delivered")
        assert len(in_order(mon.seen)) == in_outbox + 10
    finally:
        await stop(server, agent, rep)


async def test_a_failed_outbox_write_loses_nothing(tmp_path: Path) -> None:
    """The outbox write fails once (e.g. disk full): the events stay in memory, the
    reporter tries again and everything is delivered once the write succeeds."""
    import contextlib
    import sqlite3

    mon = Monitor()
    server, _, _, agent, rep = await started(tmp_path, mon)
    real_tx = agent.store.tx
    failures = [1]

    @contextlib.contextmanager
    def flaky_tx():  # type: ignore[no-untyped-def]
        if failures:
            failures.pop()
            raise sqlite3.OperationalError("database or disk is full")
        with real_tx() as db:
            yield db

    agent.store.tx = flaky_tx  # type: ignore[method-assign]
    try:
        emit_run(rep, 10)
        await wait_until(lambda: all_acked(agent, rep), 10, "delivery after the failed write")
        assert not failures
        assert len(in_order(mon.seen)) == 20
    finally:
        agent.store.tx = real_tx  # type: ignore[method-assign]
        await stop(server, agent, rep)
