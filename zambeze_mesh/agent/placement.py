"""Placement: drives the pure contract-net machine with real RPCs and timers.

Calls for proposals and awards are batched per agent (one RPC carries every tender for
that agent), so a burst of small activities costs a handful of RPCs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from zambeze_mesh.agent.campaign_wire import bid_from_pb, key_of, tender_to_pb
from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.scheduling import (
    AgentDown,
    Announce,
    AwardDecisions,
    Bid,
    BidsReceived,
    ContractNet,
    ContractNetConfig,
    Deadline,
    Decision,
    Deferred,
    Effects,
    Failed,
    LateAcceptance,
    Placed,
    SendAward,
    SendCFP,
    Tender,
    TenderKey,
    Withdraw,
    Withdrawn,
    agent_from_record,
    candidates,
    output_refs,
)
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.scheduling.model import OUTPUT_REF_PREFIX
from zambeze_mesh.security.owners import wire_owner
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.transport.scheduling import SchedulingTransport
from zambeze_mesh.v1 import common_pb2, scheduling_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.journal import Live
    from zambeze_mesh.agent.monitor import Monitor

log = logging.getLogger("zambeze_mesh.placement")

#: Activities put out to tender per turn of the event loop (see Placement.offer).
OFFER_CHUNK = 256
#: States of activities that are offered: first offers (BIDDING), and those waiting for
#: room that are offered again (READY).
OFFERABLE = frozenset({st.BIDDING, st.READY})
#: Calls for proposals and awards above this many bytes are split into several RPCs.
CHUNK_BYTES = 1 << 20

M = TypeVar("M", scheduling_pb2.Tender, scheduling_pb2.AwardItem)


def _split(items: list[M], limit: int) -> list[list[M]]:
    """Consecutive runs of ``items`` of at most ``limit`` serialized bytes (at least one each)."""
    parts: list[list[M]] = [[]]
    size = 0
    for item in items:
        n = item.ByteSize() + 8
        if parts[-1] and size + n > limit:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += n
    return parts


class Member(Protocol):
    """What placement reads of a member (see :class:`~zambeze_mesh.agent.gossip.MemberInfo`)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def record(self) -> common_pb2.AgentRecord | None: ...


class Members(Protocol):
    """The membership view placement chooses candidates from (the agent's Gossip)."""

    def members(self) -> Sequence[Member]:
        """Every known member, this agent included."""
        ...

    def alive(self) -> Sequence[Member]:
        """Members alive or suspect."""
        ...


class Placement:
    """Places activities of the monitor's campaigns by contract net.

    It talks to contractors (this agent's own included) only through ``transport``,
    and reads candidates from ``members``.
    """

    def __init__(
        self,
        *,
        name: str,
        mesh: str,
        max_message_bytes: int,
        monitor: Monitor,
        members: Members,
        transport: SchedulingTransport,
    ) -> None:
        self.name = name
        self.mesh = mesh
        self.max_message_bytes = max_message_bytes
        self.monitor = monitor
        self.members = members
        self.transport = transport
        self.cn = ContractNet(ContractNetConfig.local(), rng=random.Random())
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        #: Asked before an activity fails for want of a bidder: True keeps it waiting
        #: (set by the pilot autoscaler, when only a pilot could run it).
        self.hold: Callable[[TenderKey], bool] | None = None

    # ------------------------------------------------------------ inputs
    def offer(self, live: Live, names: list[str]) -> None:
        """Put these activities (in state BIDDING) out to tender.

        A big offer goes out :data:`OFFER_CHUNK` activities at a time, one chunk per
        turn of the event loop: the first calls for proposals leave (and the first
        activities run) while the monitor prepares the rest.
        """
        if live.state != "RUNNING":
            return
        if len(names) > OFFER_CHUNK:
            rest = names[OFFER_CHUNK:]
            names = names[:OFFER_CHUNK]
            self._loop.call_soon(self._offer_rest, live, rest)
        self._announce(live, names)

    def _offer_rest(self, live: Live, names: list[str]) -> None:
        # Skip what changed meanwhile (placed, cancelled, or the campaign ended).
        self.offer(live, [n for n in names if live.acts[n].state in OFFERABLE])

    def _announce(self, live: Live, names: list[str]) -> None:
        members = self.members.members()
        agents = [agent_from_record(m.record, m.status) for m in members if m.record is not None]
        tenders = []
        owner = wire_owner(self.mesh, self.name, live.owner)
        held: list[tuple[TenderKey, str]] = []
        for name in names:
            act = live.dag.activity(name)
            fit, excluded = candidates(act, agents)
            row = live.acts[name]
            if row.attempt > 1 and row.agent:
                # A retry goes elsewhere when it can: an agent that fails fast (a broken
                # disk, a missing tool) looks idle and would otherwise win every retry.
                others = [a for a in fit if a.name != row.agent]
                if others:
                    fit = others
                    excluded = {**excluded, row.agent: "failed the previous attempt"}
            key = TenderKey(live.id, name, row.attempt)
            if not fit and self.hold is not None and self.hold(key):
                held.append((key, "a pilot (none fits yet; pilots are being scaled)"))
                continue
            tenders.append(Tender(key, act, tuple(a.name for a in fit), excluded, owner))
        if held:
            # Only a pilot could run these, and one may come (agent/pilot_scaler.py).
            self.monitor.placement_deferred(held)
        self._step(Announce(tenders))

    def member_down(self, name: str) -> None:
        """An agent is gone: its pending bids and awards count as refusals."""
        self._step(AgentDown(name))

    def withdraw(self, live: Live) -> None:
        """Stop negotiating for a cancelled campaign."""
        keys = [TenderKey(live.id, n, a.attempt) for n, a in live.acts.items()]
        self._step(Withdraw(keys))

    def _step(self, inp: object) -> None:
        fx = self.cn.step(self._loop.time(), inp)  # type: ignore[arg-type]
        self._apply(fx)

    def _apply(self, fx: Effects) -> None:
        for tid in fx.cancel_timers:
            handle = self._timers.pop(tid, None)
            if handle is not None:
                handle.cancel()
        for t in fx.timers:
            delay = max(0.0, t.at - self._loop.time())
            self._timers[t.timer_id] = self._loop.call_later(delay, self._deadline, t.timer_id)
        # The same tenders usually go to every candidate: convert them once per step.
        views: dict[tuple[TenderKey, ...], list[scheduling_pb2.Tender]] = {}
        for msg in fx.messages:
            if isinstance(msg, SendCFP):
                keys = tuple(t.key for t in msg.tenders)
                if keys not in views:
                    views[keys] = [tender_to_pb(t, for_bids=True) for t in msg.tenders]
                self._cfp(msg, views[keys])
            elif isinstance(msg, SendAward):
                self._award(msg)
        placed = [(ev.key, ev.agent) for ev in fx.events if isinstance(ev, Placed)]
        if placed:
            self.monitor.placed(placed)
        deferred = [(ev.key, ev.reason) for ev in fx.events if isinstance(ev, Deferred)]
        if deferred:
            self.monitor.placement_deferred(deferred)
        for ev in fx.events:
            if isinstance(ev, Failed):
                self.monitor.placement_failed(ev.key, ev.reason)
            elif isinstance(ev, LateAcceptance):
                self.cancel_on([(ev.key, ev.agent)])
            elif isinstance(ev, Withdrawn) and ev.awarded_to:
                self.cancel_on([(ev.key, ev.awarded_to)])

    def _deadline(self, timer_id: int) -> None:
        self._timers.pop(timer_id, None)
        self._step(Deadline(timer_id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ calls
    def _chunk_bytes(self) -> int:
        """Largest call (bytes) before it is split: a quarter of the message limit."""
        return max(1024, min(CHUNK_BYTES, self.max_message_bytes // 4))

    # Calls are started right here, synchronously: a remote call created now is on the
    # wire before whatever else this turn of the event loop does (answering Submit,
    # starting a Watch...); only waiting for the answer happens in a task (so an
    # answer never arrives inside the step that asked).
    def _cfp(self, msg: SendCFP, tenders: list[scheduling_pb2.Tender]) -> None:
        # Big calls go out in several calls (each under the message limit), at once.
        for part in _split(tenders, self._chunk_bytes()):
            req = scheduling_pb2.CallForProposalsRequest(monitor=self.name, tenders=part)
            self._spawn(self._bids(msg.to, part, self.transport.call_for_proposals(msg.to, req)))

    async def _bids(
        self,
        to: str,
        tenders: list[scheduling_pb2.Tender],
        reply: Awaitable[scheduling_pb2.CallForProposalsResponse],
    ) -> None:
        try:
            resp = await reply
            bids = [bid_from_pb(b) for b in resp.bids]
        except ZmeshError as exc:
            # Unreachable now (gossip decides whether it is gone): ask again later.
            bids = [Bid.busy_refusal(key_of(t), f"unreachable: {exc}") for t in tenders]
        self._step(BidsReceived(to, bids))

    def _award(self, msg: SendAward) -> None:
        items = []
        for t in msg.tenders:
            item = scheduling_pb2.AwardItem(tender=tender_to_pb(t), monitor=self.name)
            item.resolved_inputs.update(self._resolve_outputs(t))
            items.append(item)
        for part in _split(items, self._chunk_bytes()):
            req = scheduling_pb2.AwardRequest(monitor=self.name, items=part)
            self._spawn(self._decisions(msg.to, part, self.transport.award(msg.to, req)))

    async def _decisions(
        self,
        to: str,
        items: list[scheduling_pb2.AwardItem],
        reply: Awaitable[scheduling_pb2.AwardResponse],
    ) -> None:
        try:
            resp = await reply
            decisions = [
                Decision(TenderKey(d.campaign_id, d.activity, d.attempt), d.accepted, d.reason)
                for d in resp.decisions
            ]
        except ZmeshError as exc:
            decisions = [Decision(key_of(i.tender), False, f"unreachable: {exc}") for i in items]
        self._step(AwardDecisions(to, decisions))

    def _resolve_outputs(self, t: Tender) -> dict[str, str]:
        """``@output:<name>`` → ``<agent>://<absolute output dir>`` of the producer."""
        live = self.monitor.live.get(t.key.campaign_id)
        out: dict[str, str] = {}
        if live is None:
            return out
        for name in output_refs(t.activity):
            row = live.acts.get(name)
            if row is None or row.state != st.SUCCEEDED:
                continue
            path = row.detail.get("output_dir", "")
            if path:
                out[OUTPUT_REF_PREFIX + name] = self._output_location(row.agent, path)
        return out

    def _output_location(self, producer: str, path: str) -> str:
        """``producer://path``, or where a pilot that has left returned it."""
        for m in self.members.members():
            if m.name == producer and m.status == "left" and m.record is not None:
                from zambeze_mesh.pilots.spec import returned_location

                labels = dict(m.record.capabilities.labels)
                moved = returned_location(producer, path, labels)
                if moved is not None:
                    return moved
        return f"{producer}://{path}"

    def cancel_on(self, targets: Iterable[tuple[TenderKey, str]]) -> None:
        """Ask contractors to stop these attempts."""
        by_agent: dict[str, list[TenderKey]] = defaultdict(list)
        for key, agent in targets:
            if agent:
                by_agent[agent].append(key)
        for agent, keys in by_agent.items():
            self._spawn(self._cancel(agent, keys))

    def cancel_everywhere(self, keys: list[TenderKey]) -> None:
        """Cancel attempts on every live member (used when the holder is unknown)."""
        self.cancel_on((k, m.name) for m in self.members.alive() for k in keys)

    async def _cancel(self, agent: str, keys: list[TenderKey]) -> None:
        req = scheduling_pb2.CancelActivitiesRequest(
            monitor=self.name,
            activities=[
                scheduling_pb2.ActivityRef(
                    campaign_id=k.campaign_id, activity=k.activity, attempt=k.attempt
                )
                for k in keys
            ],
        )
        try:
            await self.transport.cancel(agent, req)
        except ZmeshError as exc:
            log_event(log, "cancel.failed", level=logging.WARNING, agent=agent, reason=str(exc))

    async def close(self) -> None:
        """Stop timers and in-flight RPCs."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
