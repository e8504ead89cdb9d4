"""Delivering a contractor's events to their monitors: in order, at least once.

Events are emitted into memory, then written to the contractor's outbox (SQLite) in
one transaction just before they are sent, and deleted only once the monitor has
acknowledged them; a crash loses nothing the monitor saw, and whatever was not
acknowledged is sent again (the monitor ignores duplicates).

Each remote monitor gets one long-lived ``Scheduling.ReportStream`` call: reports go
out in order without waiting for the previous acknowledgement, and acknowledgements
come back on the same stream. When the stream breaks (the monitor restarted, the link
was cut, or an acknowledgement is overdue), what was in flight goes back to the head
of the queue and is sent on a new stream, with backoff. Streams are opened on the
Scheduling transport (:mod:`zambeze_mesh.transport.scheduling`): over gRPC to other
agents, in-process to this agent's own monitor, with the same semantics.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from zambeze_mesh.agent.campaign_wire import from_proto
from zambeze_mesh.clock import SYSTEM_CLOCK, Clock
from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.store import Store
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.transport.scheduling import ReportLink, SchedulingTransport
from zambeze_mesh.v1 import common_pb2, scheduling_pb2

log = logging.getLogger("zambeze_mesh.reporter")

#: Events per report message.
REPORT_BATCH = 2000
#: Events sent but not yet acknowledged, per monitor, before sending pauses.
MAX_IN_FLIGHT = 8000
#: Reports sent but not yet acknowledged, per monitor (more wait and join a batch).
MAX_OUTSTANDING = 2
#: An acknowledgement later than this breaks the stream (and everything is resent).
ACK_TIMEOUT_S = 10.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0

Item = tuple[int, common_pb2.Event]  # (outbox seq, event)


@dataclass
class _Link:
    """One report stream to a monitor and what travels on it unacknowledged."""

    stream: ReportLink
    in_flight: dict[int, common_pb2.Event] = field(default_factory=dict)
    sent_at: list[tuple[float, int]] = field(default_factory=list)  # (time, last seq) per send
    reader: asyncio.Task[None] | None = None
    dead: bool = False


@dataclass
class _Route:
    """Per-monitor delivery state."""

    queue: list[Item] = field(default_factory=list)  # in the outbox, not sent; seq order
    link: _Link | None = None
    backoff: float = BACKOFF_MIN_S
    retry_at: float = 0.0


class Reporter:
    """The contractor's outbox and its delivery; see the module docs.

    ``name`` is this contractor's agent name (the reports' sender), ``store`` holds the
    outbox, ``transport`` opens the streams to monitors.
    """

    def __init__(
        self,
        *,
        name: str,
        store: Store,
        transport: SchedulingTransport,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.store = store
        self.transport = transport
        self.clock = clock
        self._emitted: list[tuple[str, common_pb2.Event, bool]] = []
        self._acked: list[int] = []
        self._routes: dict[str, _Route] = defaultdict(_Route)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Queue what a previous run left in the outbox and start delivering."""
        for seq, monitor, ev in cstore.outbox_pending(self.store, 1_000_000):
            self._routes[monitor].queue.append((seq, ev))
        self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def close(self) -> None:
        """Stop delivering; emitted events are written to the outbox first."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        readers = []
        for route in self._routes.values():
            if route.link is not None:
                if route.link.reader is not None:
                    readers.append(route.link.reader)
                self._drop(route, route.link)
        await asyncio.gather(*readers, return_exceptions=True)
        self.persist()

    # ------------------------------------------------------------ input
    def emit(self, monitor: str, ev: common_pb2.Event, *, final: bool = False) -> None:
        """Queue an event for ``monitor``; ``final`` also closes the contract in the store."""
        self._emitted.append((monitor, ev, final))
        self._wake.set()

    def persist(self) -> None:
        """Write emitted events to the outbox and forget acknowledged ones (one transaction)."""
        if not self._emitted and not self._acked:
            return
        batch, self._emitted = self._emitted, []
        acked, self._acked = self._acked, []
        added: list[tuple[str, int, common_pb2.Event]] = []
        try:
            with self.store.tx() as db:
                cstore.outbox_delete(db, acked)
                for monitor, ev, final in batch:
                    added.append((monitor, cstore.outbox_add(db, monitor, ev), ev))
                    if final:
                        cstore.contract_put(
                            db,
                            monitor,
                            ev.campaign_id,
                            ev.activity,
                            ev.attempt,
                            b"",
                            from_proto(ev.state),
                        )
        except BaseException:
            # Rolled back: keep everything for the next attempt.
            self._emitted = batch + self._emitted
            self._acked = acked + self._acked
            raise
        for monitor, seq, ev in added:
            self._routes[monitor].queue.append((seq, ev))

    def unacknowledged(self) -> int:
        """Events emitted or in the outbox that no monitor has acknowledged yet."""
        return len(self._emitted) + sum(
            len(r.queue) + (len(r.link.in_flight) if r.link else 0) for r in self._routes.values()
        )

    # ------------------------------------------------------------ delivery
    async def _run(self) -> None:
        while True:
            timeout = self._next_timeout()
            if timeout is None:
                await self._wake.wait()
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
            await asyncio.sleep(0)  # let events emitted in the same tick join this batch
            self._wake.clear()
            try:
                if self._worth_persisting():
                    self.persist()
                await self._deliver_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("report delivery failed")
                await asyncio.sleep(BACKOFF_MIN_S)
                self._wake.set()

    def _worth_persisting(self) -> bool:
        """Write the outbox now only if something can be sent now (or to clean up).

        While every link has MAX_OUTSTANDING reports unacknowledged, new events wait in
        memory and join the next write; a write per event would cost one SQLite commit
        each under load. (A crash meanwhile loses only events no monitor saw: their
        contract is still open and is reported as a lost attempt on restart.)
        """
        if not self._emitted:
            return bool(self._acked)
        for monitor in {m for m, _, _ in self._emitted}:
            route = self._routes[monitor]
            link = route.link
            # Only a live stream waiting for an acknowledgement lets events wait in
            # memory; an unreachable monitor gets them written at once (they may wait
            # long, and must survive a restart of this agent).
            if link is None or link.dead or len(link.sent_at) < MAX_OUTSTANDING:
                return True
        return len(self._emitted) >= REPORT_BATCH

    def _next_timeout(self) -> float | None:
        now = self.clock.monotonic()
        waits = []
        for route in self._routes.values():
            if route.queue and route.retry_at > now:
                waits.append(route.retry_at - now)
            link = route.link
            if link is not None and link.sent_at:
                waits.append(max(0.0, link.sent_at[0][0] + ACK_TIMEOUT_S - now))
        return min(waits) if waits else None

    async def _deliver_all(self) -> None:
        now = self.clock.monotonic()
        for monitor, route in list(self._routes.items()):
            link = route.link
            if link is not None and link.sent_at and now - link.sent_at[0][0] > ACK_TIMEOUT_S:
                log.warning(
                    "report to %s unacknowledged for %.0fs: reconnecting", monitor, ACK_TIMEOUT_S
                )
                self._drop(route, link)
            if route.queue and route.retry_at <= now:
                await self._deliver(monitor, route)

    async def _deliver(self, monitor: str, route: _Route) -> None:
        link = route.link
        if link is None or link.dead:
            try:
                link = route.link = self._open(monitor, route)
            except ZmeshError:
                self._failed(route)  # unknown or gone: keep the events, try again later
                return
        # At most MAX_OUTSTANDING reports unacknowledged: under load each report then
        # carries everything emitted during the previous round trip (fewer, bigger
        # messages and journal commits); when idle, events still leave at once.
        while (
            route.queue
            and len(link.in_flight) < MAX_IN_FLIGHT
            and len(link.sent_at) < MAX_OUTSTANDING
            and not link.dead
        ):
            items, route.queue = route.queue[:REPORT_BATCH], route.queue[REPORT_BATCH:]
            for seq, ev in items:
                link.in_flight[seq] = ev
            link.sent_at.append((self.clock.monotonic(), items[-1][0]))
            try:
                await link.stream.send(self._request(items))
            except ZmeshError as exc:
                log.info("report stream to %s broke while sending: %s", monitor, exc)
                self._drop(route, link)
                self._failed(route)
                return

    def _request(self, items: list[Item]) -> scheduling_pb2.ReportStatusRequest:
        return scheduling_pb2.ReportStatusRequest(
            contractor=self.name,
            events=[scheduling_pb2.ContractorEvent(outbox_seq=s, event=e) for s, e in items],
        )

    def _open(self, monitor: str, route: _Route) -> _Link:
        link = _Link(self.transport.open_reports(monitor))
        link.reader = asyncio.create_task(self._read(monitor, route, link))
        return link

    async def _read(self, monitor: str, route: _Route, link: _Link) -> None:
        """Acknowledgements of one stream; when it ends, requeue what it did not ack."""
        try:
            async for resp in link.stream.acks():
                for seq in resp.acked:
                    if link.in_flight.pop(seq, None) is not None:
                        self._acked.append(seq)
                while link.sent_at and link.sent_at[0][1] not in link.in_flight:
                    link.sent_at.pop(0)
                route.backoff = BACKOFF_MIN_S
                self._wake.set()
        except ZmeshError as exc:
            log.info("report stream to %s ended: %s", monitor, exc)
        except asyncio.CancelledError:
            pass
        finally:
            if route.link is link:
                self._drop(route, link)
                if route.queue:
                    self._failed(route)

    def _drop(self, route: _Route, link: _Link) -> None:
        """Forget a stream; its unacknowledged events go back to the head of the queue."""
        if link.dead:
            return
        link.dead = True
        link.stream.close()
        if route.link is link:
            route.link = None
        if link.in_flight:
            back = sorted(link.in_flight.items())
            link.in_flight.clear()
            route.queue = sorted(back + route.queue, key=lambda item: item[0])
        link.sent_at.clear()
        self._wake.set()

    def _failed(self, route: _Route) -> None:
        route.retry_at = self.clock.monotonic() + route.backoff
        route.backoff = min(BACKOFF_MAX_S, route.backoff * 2)
        self._wake.set()
