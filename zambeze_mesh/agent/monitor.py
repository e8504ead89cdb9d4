"""The campaign monitor: the agent that received a campaign drives it to the end.

Every transition is journaled to SQLite (with a gap-free per-campaign sequence number)
*before* the monitor acts on it; ``Watch`` streams from that journal, so a client can
resume from any sequence number and a restarted monitor continues from where the
journal says it was. Placement is delegated to :class:`~.placement.Placement` (contract
net); contractors report back through :meth:`Monitor.report`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from zambeze_mesh.agent.campaign_wire import from_proto, now_ms
from zambeze_mesh.agent.committer import After, Committer
from zambeze_mesh.agent.journal import (
    CAMPAIGN_STATES,
    STRICT_TRANSITIONS,
    CommitFaults,
    Journal,
    Live,
    graph_of,
)
from zambeze_mesh.agent.submit_gate import SubmitGate, settle
from zambeze_mesh.control.campaign import (
    CampaignMachine,
    CancelRequested,
    Deferred,
    Effects,
    Input,
    Key,
    MemberDown,
    Placed,
    PlacementFailed,
    Report,
    Reported,
    Resumed,
    Submitted,
)
from zambeze_mesh.control.states import CampaignState
from zambeze_mesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotPermitted,
    ResourceExhausted,
    ZmeshError,
)
from zambeze_mesh.scheduling import (
    MAX_ACTIVITIES,
    ActivityDef,
    CampaignDag,
    TenderKey,
    activity_from_spec,
)
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.security.owners import wire_owner
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.v1 import campaigns_pb2, common_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.agent.placement import Placement

log = logging.getLogger("zambeze_mesh.monitor")

#: Backoff of activities no agent has room for: first wait, and the longest.
DEFER_MIN_S = 0.1
DEFER_MAX_S = 5.0
#: Most waiting activities offered again at once, and how early one may go.
REOFFER_BATCH = 2000
REOFFER_SLACK_S = 0.05
#: Most events in one WatchBatches message, and roughly its most bytes.
WATCH_BATCH = 1000
WATCH_BATCH_BYTES = 1 << 20


class Monitor:
    """Monitors the campaigns submitted to this agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.live: dict[str, Live] = {}
        self.placement: Placement | None = None
        self._reoffer_timer: asyncio.TimerHandle | None = None
        self._reoffer_at = 0.0
        self.gate = SubmitGate(agent.config.max_admitting_activities)
        #: Journal commits to fail on purpose (tests only; None in production).
        self.faults: CommitFaults | None = None
        #: Every change of a campaign is a step: decided, committed, then applied.
        self.steps = Committer(self._journal, self._journal_unwritable)
        #: The campaigns' state machine; it drives the campaigns in :attr:`live`.
        self.machine = CampaignMachine(self.live, strict=STRICT_TRANSITIONS)  # type: ignore[arg-type]

    def _journal(self) -> Journal:
        return Journal(self.agent.require_store(), self.live, self.faults)

    def _journal_unwritable(self, exc: BaseException) -> None:
        """The journal stayed unwritable: stop the agent rather than run on with
        campaigns whose state it cannot record (a restart resumes from the journal)."""
        asyncio.get_running_loop().create_task(self.agent.shutdown())

    async def close(self) -> None:
        """Stop taking steps (the group being written finishes)."""
        if self._reoffer_timer is not None:
            self._reoffer_timer.cancel()
            self._reoffer_timer = None
        await self.steps.close()

    # ------------------------------------------------------------ life cycle
    async def start(self, placement: Placement) -> None:
        """Resume every campaign the journal says is still running."""
        self.placement = placement
        store = self.agent.require_store()
        for row in cstore.list_campaigns(store, 100_000, state=CampaignState.RUNNING):
            acts = {a.name: a for a in cstore.load_activities(store, row.id)}
            req = cstore.load_request(store, row.id)
            if req is None:
                log_event(log, "campaign.unreadable", level=logging.ERROR, campaign=row.id)
                continue
            dag = CampaignDag([activity_from_spec(s) for s in req.activities])
            live = Live(
                row.id,
                row.name,
                graph_of(dag),
                acts,
                row.last_seq,
                created_ms=row.created_ms,
                owner=row.owner,
                dag=dag,
            )
            self.live[row.id] = live
            log_event(log, "campaign.resumed", campaign=row.id, seq=row.last_seq)
        for cid in list(self.live):
            await self._take(Resumed(cid), wait=True)

    def _take(self, inp: Input, *, wait: bool = False) -> asyncio.Future[None]:
        """Queue an input of the machine: stepped, committed, then applied.

        The returned future is done once it is applied (only with ``wait``)."""

        def step(j: Journal) -> After:
            fx = self.machine.step(asyncio.get_running_loop().time(), inp)
            j.add(fx.tx)
            return lambda: self._apply(fx)

        done = self.steps.step(step, wait=wait)
        if done is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
        return done

    def _apply(self, fx: Effects) -> None:
        """A step's effects once its records are committed."""
        if fx.started is not None:
            assert isinstance(fx.started, Live)
            self.live[fx.started.id] = fx.started
        for cid, name in fx.awarded:
            live = self.live.get(cid)
            if live is not None:
                live.deferrals.pop(name, None)
        if fx.waiting:
            now = asyncio.get_running_loop().time()
            for cid, name, message in fx.waiting:
                live = self.live.get(cid)
                if live is None:
                    continue
                n = live.deferrals.get(name, 0) + 1
                live.deferrals[name] = n
                live.waiting[name] = now + min(DEFER_MAX_S, DEFER_MIN_S * 2 ** (n - 1))
                live.acts[name].message = message
            self._arm_reoffer()
        for cid, agent, n in fx.lost:
            log_event(log, "campaign.contractor_lost", campaign=cid, agent=agent, activities=n)
        placement = self.placement
        if placement is None:
            return
        if fx.cancel_everywhere:
            placement.cancel_everywhere([_tender_key(k) for k in fx.cancel_everywhere])
        for cid in fx.withdraw:
            live = self.live.get(cid) or _finished(fx, cid)
            if live is not None:
                placement.withdraw(live)
        if fx.cancel_on:
            placement.cancel_on([(_tender_key(k), agent) for k, agent in fx.cancel_on])
        for cid, names in fx.offer:
            live = self.live.get(cid)
            if live is not None:
                self._offer(live, names)

    # ------------------------------------------------------------ submit
    async def submit(self, req: campaigns_pb2.SubmitRequest, owner: str = "") -> str:
        """Validate, journal and start a campaign of ``owner``; returns its id.

        ``client_request_id`` is scoped to ``owner``: the same key from another
        owner is another campaign. Validation, the DAG and the journal are prepared
        in a worker thread, one campaign at a time, admitted by :attr:`gate` (which
        answers RESOURCE_EXHAUSTED with a retry hint when ``owner`` has too much
        waiting): the event loop keeps serving meanwhile."""
        if len(req.client_request_id) > 128:
            raise InvalidInput("client_request_id is longer than 128 characters")
        existing = self._resubmitted(req, owner)
        if existing:
            return existing
        self._check_sizes(req)
        async with self.gate.admit(owner, len(req.activities)):
            # An equal request admitted just before this one may have created it.
            existing = self._resubmitted(req, owner)
            if existing:
                return existing
            acts, dag = await asyncio.to_thread(_build, req)
            self._check_plugins(acts)
            self._check_policy(acts, owner)
            cid = uuid.uuid4().hex[:16]
            live = Live(
                cid,
                req.name,
                graph_of(dag),
                {a.name: cstore.ActivityRow(a.name, st.PENDING) for a in acts},
                0,
                created_ms=now_ms(),
                owner=owner,
                dag=dag,
            )
            # The new campaign is nobody else's yet: its first step runs off the loop;
            # it is driven (and offered) once its records are committed.
            msg = f"submitted with {len(acts)} activities"
            fx = await asyncio.to_thread(self.machine.step, 0.0, Submitted(live, msg))
            names = [a.name for a in acts]
            created = live.created_ms

            def step(j: Journal) -> After:
                j.before.append(
                    lambda db: cstore.insert_campaign(db, cid, req, created, names, owner)
                )
                j.add(fx.tx, undo=False)
                return lambda: self._apply(fx)

            done = self.steps.step(step, wait=True)
            assert done is not None
            await done
        settle(len(acts))
        log_event(log, "campaign.submitted", campaign=cid, name=req.name, activities=len(acts))
        return cid

    def _resubmitted(self, req: campaigns_pb2.SubmitRequest, owner: str) -> str | None:
        """The campaign ``owner`` already submitted with this ``client_request_id``
        (the same request again), or None; AlreadyExists for a different request."""
        rid = req.client_request_id
        if not rid:
            return None
        store = self.agent.require_store()
        existing = cstore.find_by_request_id(store, rid, owner)
        if existing and cstore.load_request(store, existing) != req:
            raise AlreadyExists(
                f"client_request_id {rid!r} was already used for campaign {existing} with a "
                "different request; use a new id for a new campaign"
            )
        return existing

    @staticmethod
    def _check_sizes(req: campaigns_pb2.SubmitRequest) -> None:
        if not req.name or len(req.name) > 256:
            raise InvalidInput("a campaign needs a name of 1 to 256 characters")
        if not req.activities:
            raise InvalidInput(f"campaign {req.name!r} has no activities")
        if len(req.activities) > MAX_ACTIVITIES:
            raise ResourceExhausted(
                f"campaign {req.name!r} has {len(req.activities)} activities;"
                f" the limit is {MAX_ACTIVITIES}"
            )

    def _check_policy(self, acts: list[ActivityDef], owner: str) -> None:
        """Refuse activities pinned to this agent that its execution policy forbids."""
        policy = self.agent.execution_policy
        if not policy.rules:
            return
        identity = wire_owner(self.agent.mesh, self.agent.name, owner)
        for a in acts:
            if a.agent == self.agent.name:
                reason = policy.refusal(identity, a.plugin, function=a.is_function)
                if reason is not None:
                    raise NotPermitted(f"activity {a.name!r}: {reason}")

    def _check_plugins(self, acts: list[ActivityDef]) -> None:
        gossip = self.agent.gossip
        offered: set[str] = set()
        if gossip is not None:
            for m in gossip.alive():
                if m.record is not None:
                    offered.update(m.record.capabilities.plugins)
                    if m.record.capabilities.transfer_methods:
                        offered.add("transfer")
        for a in acts:
            if a.plugin not in offered:
                raise FailedPrecondition(
                    f"activity {a.name!r} needs plugin {a.plugin!r}, which no agent in the"
                    f" mesh offers (offered: {', '.join(sorted(offered)) or 'none'})"
                )

    # ------------------------------------------------------------ driving
    def _offer(self, live: Live, names: list[str]) -> None:
        if names and self.placement is not None and live.state == CampaignState.RUNNING:
            self.placement.offer(live, names)

    def placed(self, placements: list[tuple[TenderKey, str]]) -> None:
        """Contract net: agents accepted these awards (journaled in one transaction)."""
        self._take(Placed(tuple((_key(k), agent) for k, agent in placements)))

    def placement_deferred(self, items: list[tuple[TenderKey, str]]) -> None:
        """Contract net: no agent has room now; keep these READY and offer them again.

        The first deferral journals BIDDING -> READY with the reasons; offering again
        happens inside READY (no event per retry), with a backoff per activity.
        """
        self._take(Deferred(tuple((_key(k), reason) for k, reason in items)))

    def _arm_reoffer(self) -> None:
        due = [t for live in self.live.values() for t in live.waiting.values()]
        if not due:
            return
        at = min(due)
        if self._reoffer_timer is not None and self._reoffer_at <= at:
            return
        if self._reoffer_timer is not None:
            self._reoffer_timer.cancel()
        loop = asyncio.get_running_loop()
        self._reoffer_at = at
        self._reoffer_timer = loop.call_at(at, self._reoffer)

    def _reoffer(self) -> None:
        """Offer again the waiting activities whose backoff has passed (still READY)."""
        self._reoffer_timer = None
        now = asyncio.get_running_loop().time()
        budget = REOFFER_BATCH
        for live in list(self.live.values()):
            # (due a moment later counts too: one call for proposals instead of several)
            due = [n for n, t in live.waiting.items() if t <= now + REOFFER_SLACK_S][:budget]
            for name in due:
                del live.waiting[name]
            names = [n for n in due if live.acts[n].state == st.READY]
            budget -= len(names)
            self._offer(live, names)
            if budget <= 0:
                break
        self._arm_reoffer()

    def placement_failed(self, key: TenderKey, reason: str) -> None:
        """Contract net: nobody could take the activity."""
        self._take(PlacementFailed(_key(key), reason))

    # ------------------------------------------------------------ reports
    def report(
        self, contractor: str, events: builtins.list[common_pb2.Event]
    ) -> asyncio.Future[None]:
        """Events from a contractor: journaled, then acted upon.

        Group commit: reports received while the previous group is being written are
        journaled in one transaction. The returned future completes once these events
        are committed (acknowledge them to the contractor only then).
        """
        reports = []
        awarded = set()
        cn = self.placement.cn if self.placement is not None else None
        for ev in events:
            key = Key(ev.campaign_id, ev.activity, ev.attempt)
            try:
                state: st.ActivityState | None = from_proto(ev.state)
            except InvalidInput:
                state = None
            reports.append(
                Report(key, state, ev.message, tuple(ev.detail.items()), bytes(ev.result))
            )
            if cn is not None and cn.awarded_to(_tender_key(key)) == contractor:
                awarded.add(key)
        return self._take(Reported(contractor, tuple(reports), frozenset(awarded)), wait=True)

    def member_down(self, name: str) -> None:
        """Gossip says ``name`` is dead or left: re-offer what it was running."""
        self._take(MemberDown(name))

    # ------------------------------------------------------------ client API
    def status(self, cid: str, edges: bool = True) -> campaigns_pb2.CampaignStatus:
        """The current state of a campaign (with each activity's ``depends_on`` if ``edges``)."""
        store = self.agent.require_store()
        row = cstore.load_campaign(store, cid)
        if row is None:
            raise NotFound(f"no campaign {cid!r} on this agent")
        live = self.live.get(cid)
        acts = list(live.acts.values()) if live else cstore.load_activities(store, cid)
        dag = None if not edges else live.dag if live else self._stored_dag(cid)
        out = campaigns_pb2.CampaignStatus(
            campaign_id=cid,
            name=row.name,
            # (a campaign still driven is RUNNING until its final event is committed)
            state=CAMPAIGN_STATES[CampaignState.RUNNING if live else row.state],
            monitor=self.agent.name,
            last_seq=live.committed_seq if live else row.last_seq,
            created_unix_ms=row.created_ms,
            message=live.message if live else row.message,
            finished_unix_ms=0 if live else row.finished_ms,
        )
        for a in acts:  # in submission order
            pb = out.activities.add(
                name=a.name,
                state=st.to_proto(a.state),
                attempt=a.attempt,
                agent=a.agent,
                message=a.message,
                result=a.result,
            )
            pb.detail.update(a.detail)
            if dag is not None and a.name in dag:
                pb.depends_on.extend(dag.predecessors(a.name))
        return out

    def _stored_dag(self, cid: str) -> CampaignDag | None:
        """The DAG of a campaign this process does not drive, from its stored request."""
        req = cstore.load_request(self.agent.require_store(), cid)
        if req is None:
            return None
        try:
            return CampaignDag([activity_from_spec(s) for s in req.activities])
        except ZmeshError:
            return None

    def list(self, limit: int, owner: str | None = None) -> list[campaigns_pb2.CampaignStatus]:
        """Campaigns this agent monitors, newest first (only ``owner``'s when given)."""
        rows = cstore.list_campaigns(self.agent.require_store(), limit or 100, owner=owner)
        return [self.status(r.id, edges=False) for r in rows]

    def owner_of(self, cid: str) -> str | None:
        """The owner of campaign ``cid``, or None if this agent has no such campaign."""
        row = cstore.load_campaign(self.agent.require_store(), cid)
        return row.owner if row is not None else None

    async def watch(
        self, cid: str, after: int, follow: bool = True
    ) -> AsyncIterator[common_pb2.Event]:
        """Events with seq > ``after``, one at a time (see :meth:`watch_batches`)."""
        async for batch in self.watch_batches(cid, after, follow):
            for ev in batch:
                yield ev

    async def watch_batches(
        self, cid: str, after: int, follow: bool = True
    ) -> AsyncIterator[builtins.list[common_pb2.Event]]:
        """Events with seq > ``after``, in order and in batches, until the final event.

        Each batch is every event available at that moment (at most
        :data:`WATCH_BATCH` events or about :data:`WATCH_BATCH_BYTES`). Recent events
        of a campaign this process drives come from memory; older ones (and campaigns
        that ended before this process started) from the journal.
        """
        store = self.agent.require_store()
        if cstore.load_campaign(store, cid) is None:
            raise NotFound(f"no campaign {cid!r} on this agent")
        last = after
        live = self.live.get(cid)  # kept even after it finishes and leaves self.live
        while True:
            waiter = live.changed if live is not None else None
            if live is not None and last + 1 >= live.first_seq:
                start = last + 1 - live.first_seq
                available = live.recent[start : start + WATCH_BATCH]
            else:
                available = cstore.events_after(store, cid, last, WATCH_BATCH)
            if available:
                batch, final = _cut_batch(available)
                last = batch[-1].seq
                yield batch
                if final:
                    return
                continue
            if live is None or live.ended:
                row = cstore.load_campaign(store, cid)
                if row is None or row.last_seq <= last or not follow:
                    return
                live = None  # the rest is in the journal
                continue
            if not follow:
                return
            assert waiter is not None
            try:
                await asyncio.wait_for(waiter.wait(), timeout=5.0)
            except TimeoutError:
                pass

    async def cancel(self, cid: str) -> campaigns_pb2.CampaignStatus:
        """Cancel every unfinished activity; running ones are killed on their agents.

        Answers once the cancellation is committed."""
        if cid in self.live:
            await self._take(CancelRequested(cid), wait=True)
        return self.status(cid)


def _key(k: TenderKey) -> Key:
    return Key(k.campaign_id, k.activity, k.attempt)


def _tender_key(k: Key) -> TenderKey:
    return TenderKey(k.campaign_id, k.activity, k.attempt)


def _finished(fx: Effects, cid: str) -> Live | None:
    """The campaign ``cid`` that this step ended (it has left ``Monitor.live``)."""
    for run in fx.tx.finished:
        if run.id == cid and isinstance(run, Live):
            return run
    return None


def _build(req: campaigns_pb2.SubmitRequest) -> tuple[list[ActivityDef], CampaignDag]:
    """Validate a submitted campaign's activities and build its DAG (pure, thread-safe)."""
    acts = [activity_from_spec(spec) for spec in req.activities]
    return acts, CampaignDag(acts)


def _is_final(ev: common_pb2.Event) -> bool:
    return not ev.activity and ev.campaign_state not in (0, common_pb2.CAMPAIGN_STATE_RUNNING)


def _cut_batch(events: list[common_pb2.Event]) -> tuple[list[common_pb2.Event], bool]:
    """The head of ``events`` that fits one message; True if it ends with the final event."""
    size = 0
    for i, ev in enumerate(events):
        if _is_final(ev):
            return events[: i + 1], True
        size += ev.ByteSize()
        if size > WATCH_BATCH_BYTES and i > 0:
            return events[:i], False
    return events, False
