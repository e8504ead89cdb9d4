"""The monitor's side of a campaign as a pure state machine.

:class:`CampaignMachine` owns the campaigns this agent drives: their DAG, readiness,
attempts, retries, skips, cancellation, per-campaign sequence numbers and Watch
records. It is driven by ``step(now, input) -> Effects`` with the frozen inputs below
and does no I/O: the async shell (:mod:`zambeze_mesh.agent.monitor`) feeds it, commits
the effects' :class:`~.records.Transaction` records, and only then applies the rest
(offers, cancellations, acknowledgements, answers). When the commit fails the shell
calls :meth:`Effects.rollback` and memory is exactly as it was before the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from zambeze_mesh.control.records import CampaignRun, Transaction
from zambeze_mesh.control.states import (
    ALLOWED,
    PLACED,
    TERMINAL,
    ActivityState,
    CampaignState,
    is_allowed,
)

A = ActivityState
#: What a contractor may report from any placed state.
_ENDS = frozenset({A.SUCCEEDED, A.FAILED, A.CANCELLED})

#: Times a contractor may be lost under an attempt before the activity fails.
MAX_INFRA_RETRIES = 3
#: Attempts a campaign's activity may be handed back (by pilots leaving) before the
#: next hand-back counts as a failure.
MAX_HANDED_BACK = 32


@dataclass(frozen=True)
class Key:
    """One attempt of one activity of one campaign."""

    campaign_id: str
    activity: str
    attempt: int


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Submitted:
    """A new campaign (not yet driven: it is once the effects are committed)."""

    run: CampaignRun
    message: str


@dataclass(frozen=True)
class Resumed:
    """After a restart: a campaign the journal says is still running."""

    campaign_id: str


@dataclass(frozen=True)
class Placed:
    """The contract net: agents accepted these awards."""

    placements: tuple[tuple[Key, str], ...]


@dataclass(frozen=True)
class Deferred:
    """The contract net: no agent has room for these now."""

    items: tuple[tuple[Key, str], ...]


@dataclass(frozen=True)
class PlacementFailed:
    """The contract net: nobody can take this attempt."""

    key: Key
    reason: str


@dataclass(frozen=True)
class Report:
    """One event a contractor reported (``state`` None: a state this side does not know)."""

    key: Key
    state: ActivityState | None
    message: str = ""
    detail: tuple[tuple[str, str], ...] = ()
    result: bytes = b""


@dataclass(frozen=True)
class Reported:
    """Events from ``contractor``; ``awarded``: the attempts the contract net awarded
    it (a report may overtake the acceptance of its award)."""

    contractor: str
    reports: tuple[Report, ...]
    awarded: frozenset[Key] = frozenset()


@dataclass(frozen=True)
class MemberDown:
    """Membership: this agent is dead or left."""

    agent: str


@dataclass(frozen=True)
class CancelRequested:
    """The user cancels a campaign."""

    campaign_id: str


Input = (
    Submitted
    | Resumed
    | Placed
    | Deferred
    | PlacementFailed
    | Reported
    | MemberDown
    | CancelRequested
)


# ---------------------------------------------------------------- effects
@dataclass
class Effects:
    """What one step decided. ``tx`` holds the records to commit first; the rest is
    applied only once they are committed."""

    tx: Transaction
    #: (campaign id, activity names) to offer through the contract net.
    offer: list[tuple[str, list[str]]] = field(default_factory=list)
    #: Attempts to cancel on the agent running them.
    cancel_on: list[tuple[Key, str]] = field(default_factory=list)
    #: Attempts whose negotiation to end wherever it is (after a restart).
    cancel_everywhere: list[Key] = field(default_factory=list)
    #: Campaigns whose negotiations to withdraw (cancelled).
    withdraw: list[str] = field(default_factory=list)
    #: Activities waiting for room: (campaign id, name, why), to offer again later.
    waiting: list[tuple[str, str, str]] = field(default_factory=list)
    #: Activities placed: (campaign id, name) (their backoff ends).
    awarded: list[tuple[str, str]] = field(default_factory=list)
    #: Campaigns that lost activities with a contractor: (campaign id, agent, count).
    lost: list[tuple[str, str, int]] = field(default_factory=list)
    #: A new campaign to drive (Submitted).
    started: CampaignRun | None = None

    def rollback(self) -> None:
        """The records could not be committed: memory as it was before the step."""
        self.tx.rollback()


class CampaignMachine:
    """The campaigns driven by one monitor (see the module doc)."""

    def __init__(self, runs: dict[str, CampaignRun] | None = None, strict: bool = False) -> None:
        #: Campaigns being driven; a finished one leaves once its end is committed.
        self.runs: dict[str, CampaignRun] = runs if runs is not None else {}
        #: An illegal transition raises instead of being logged and refused.
        self.strict = strict

    def step(self, now: float, inp: Input) -> Effects:
        """Take one input; returns its effects (records first, see :class:`Effects`)."""
        fx = Effects(Transaction(self.strict))
        try:
            self._take(fx, inp)
        except BaseException:
            fx.rollback()
            raise
        return fx

    def _take(self, fx: Effects, inp: Input) -> None:
        if isinstance(inp, Reported):
            self._reported(fx, inp)
        elif isinstance(inp, Placed):
            self._placed(fx, inp)
        elif isinstance(inp, Deferred):
            self._deferred(fx, inp)
        elif isinstance(inp, PlacementFailed):
            run = self._current(inp.key)
            # (only an attempt under negotiation can fail to be placed)
            if run is not None and run.acts[inp.key.activity].state in (A.BIDDING, A.READY):
                self._fail(fx, run, inp.key.activity, inp.reason, {})
                self._advance(fx, run, [], [])
        elif isinstance(inp, Submitted):
            fx.tx.campaign(inp.run, CampaignState.RUNNING, inp.message)
            self._advance(fx, inp.run)
            fx.started = inp.run
        elif isinstance(inp, Resumed):
            self._resumed(fx, inp)
        elif isinstance(inp, MemberDown):
            self._member_down(fx, inp.agent)
        elif isinstance(inp, CancelRequested):
            self._cancel(fx, inp.campaign_id)
        else:  # pragma: no cover - typing makes this unreachable
            raise TypeError(f"unknown input {inp!r}")

    # ------------------------------------------------------------ progress
    def _advance(
        self,
        fx: Effects,
        run: CampaignRun,
        succeeded: list[str] | None = None,
        retrying: list[str] | None = None,
    ) -> None:
        """Offer every activity whose predecessors succeeded; finish when all ended.

        With ``succeeded``/``retrying`` only the successors of those activities are
        examined (incremental: O(degree) per finished activity, not O(campaign)).
        """
        if run.state != CampaignState.RUNNING:
            return
        states = run.states()
        if succeeded is None:
            ready = run.graph.ready(states)
            retry = [n for n, s in states.items() if s == A.RETRYING]
        else:
            seen: set[str] = set()
            ready = []
            for name in succeeded:
                for n in run.graph.unblocked_by(name, states):
                    if n not in seen:
                        seen.add(n)
                        ready.append(n)
            retry = list(retrying or [])
        # Ready activities go straight to BIDDING (READY is for those waiting for room).
        offer = [n for n in ready + retry if fx.tx.activity(run, n, A.BIDDING)]
        if offer:
            fx.offer.append((run.id, offer))
        if run.open == 0:
            final = run.graph.final_state(states)
            fx.tx.campaign(run, final, _final_message(run, final))

    def _fail(
        self, fx: Effects, run: CampaignRun, name: str, message: str, detail: dict[str, str]
    ) -> None:
        fx.tx.activity(run, name, A.FAILED, message=message, detail=detail)
        for dep in run.graph.on_failure(name, run.states()):
            fx.tx.activity(run, dep, A.SKIPPED, message=f"upstream activity {name!r} failed")

    def _current(self, key: Key) -> CampaignRun | None:
        """The campaign of ``key`` if that attempt is the activity's current one."""
        run = self.runs.get(key.campaign_id)
        if run is None:
            return None
        row = run.acts.get(key.activity)
        if row is None or row.attempt != key.attempt or row.state in TERMINAL:
            return None
        return run

    def _resumed(self, fx: Effects, inp: Resumed) -> None:
        """Re-offer what was being negotiated, keep what was placed."""
        run = self.runs.get(inp.campaign_id)
        if run is None:
            return
        for name, row in run.acts.items():
            if row.state in (A.READY, A.BIDDING, A.RETRYING):
                fx.cancel_everywhere.append(Key(run.id, name, row.attempt))
            if row.state in (A.READY, A.BIDDING):
                # (a RETRYING attempt was never offered: it is offered as it is)
                fx.tx.activity(
                    run,
                    name,
                    A.RETRYING,
                    message="monitor restarted during placement",
                    attempt=row.attempt + 1,
                )
        self._advance(fx, run)

    # ------------------------------------------------------------ placement
    def _placed(self, fx: Effects, inp: Placed) -> None:
        for key, agent in inp.placements:
            run = self._current(key)
            # (a report from the contractor may already have moved it past AWARDED)
            if run is not None and run.acts[key.activity].state in (A.READY, A.BIDDING):
                if fx.tx.activity(run, key.activity, A.AWARDED, agent=agent):
                    fx.awarded.append((run.id, key.activity))

    def _deferred(self, fx: Effects, inp: Deferred) -> None:
        """The first deferral journals BIDDING -> READY with the reason; offering
        again happens inside READY (no record per retry), with a backoff."""
        for key, reason in inp.items:
            run = self._current(key)
            if run is None or run.state != CampaignState.RUNNING:
                continue
            name = key.activity
            state = run.acts[name].state
            if state not in (A.BIDDING, A.READY):
                continue
            message = f"waiting for room: {reason}"
            if state == A.BIDDING and not fx.tx.activity(run, name, A.READY, message=message):
                continue
            fx.waiting.append((run.id, name, message))

    # ------------------------------------------------------------ reports
    def _reported(self, fx: Effects, inp: Reported) -> None:
        progress: dict[str, tuple[CampaignRun, list[str], list[str]]] = {}
        for rep in inp.reports:
            key = rep.key
            run = self.runs.get(key.campaign_id)
            if run is None or rep.state is None:
                continue
            row = run.acts.get(key.activity)
            if row is None or row.state in TERMINAL or key.attempt != row.attempt:
                continue  # unknown, finished, or a stale attempt
            if row.state in (A.BIDDING, A.READY):
                # The report overtook our processing of its acceptance: adopt it, but
                # only if the contract net awarded it this very attempt. Clients see
                # every attempt's AWARDED, before what the contractor did.
                if key not in inp.awarded:
                    continue
                if rep.state != A.AWARDED and not fx.tx.activity(
                    run, key.activity, A.AWARDED, agent=inp.contractor
                ):
                    continue
            elif row.agent != inp.contractor:
                continue
            if (
                rep.state == row.state
                and rep.state not in TERMINAL
                and (rep.state != A.STAGING or rep.message == row.message)
            ):
                continue  # a duplicate; STAGING repeats to report each input staged
            if rep.state not in _ENDS and not is_allowed(run.acts[key.activity].state, rep.state):
                continue  # an older event sent again, after a newer one: stale
            _, done, retry = progress.setdefault(run.id, (run, [], []))
            self._apply_report(fx, run, inp.contractor, rep, done, retry)
        for run, done, retry in progress.values():
            self._advance(fx, run, done, retry)

    def _apply_report(
        self,
        fx: Effects,
        run: CampaignRun,
        contractor: str,
        rep: Report,
        done: list[str],
        retry: list[str],
    ) -> None:
        name = rep.key.activity
        row = run.acts[name]
        detail = dict(rep.detail)
        state = rep.state
        assert state is not None
        if state not in (A.SUCCEEDED, A.FAILED, A.CANCELLED):
            fx.tx.activity(run, name, state, message=rep.message, detail=detail, agent=contractor)
            return
        if state == A.SUCCEEDED:
            if fx.tx.activity(
                run,
                name,
                A.SUCCEEDED,
                message=rep.message,
                detail=detail,
                result=rep.result,
                agent=contractor,
            ):
                done.append(name)
            return
        if (
            state == A.FAILED
            and detail.get("handed_back") == "1"
            and row.infra_retries < MAX_HANDED_BACK
        ):
            # A pilot gave it back before its walltime: offer it again, not a failure.
            if fx.tx.activity(
                run,
                name,
                A.RETRYING,
                message=f"attempt {row.attempt} handed back by {contractor}: {rep.message}",
                attempt=row.attempt + 1,
                infra_retries=row.infra_retries + 1,
            ):
                retry.append(name)
            return
        if state == A.FAILED and row.attempt < self.max_attempt(run, name):
            if fx.tx.activity(
                run,
                name,
                A.RETRYING,
                message=f"attempt {row.attempt} failed: {rep.message}",
                detail=detail,
                attempt=row.attempt + 1,
            ):
                retry.append(name)
            return
        self._fail(fx, run, name, rep.message or f"activity {state.lower()}", detail)

    @staticmethod
    def max_attempt(run: CampaignRun, name: str) -> int:
        """Attempts allowed: the first, ``retries`` more, plus one per lost contractor."""
        return 1 + run.graph.retries.get(name, 0) + run.acts[name].infra_retries

    def _member_down(self, fx: Effects, agent: str) -> None:
        """Re-offer what ``agent`` was running (or fail it, lost too often)."""
        for run in list(self.runs.values()):
            lost = [n for n, r in run.acts.items() if r.agent == agent and r.state in PLACED]
            for name in lost:
                row = run.acts[name]
                if row.infra_retries >= MAX_INFRA_RETRIES:
                    n = row.infra_retries + 1
                    self._fail(fx, run, name, f"contractor {agent} was lost {n} times", {})
                    continue
                fx.tx.activity(
                    run,
                    name,
                    A.RETRYING,
                    message=f"contractor {agent} is gone; re-offering",
                    attempt=row.attempt + 1,
                    agent="",
                    infra_retries=row.infra_retries + 1,
                )
            if lost:
                fx.lost.append((run.id, agent, len(lost)))
                self._advance(fx, run)

    def _cancel(self, fx: Effects, cid: str) -> None:
        run = self.runs.get(cid)
        if run is None or run.state != CampaignState.RUNNING:
            return
        for name, row in run.acts.items():
            if row.state in TERMINAL:
                continue
            if row.state in PLACED:
                fx.cancel_on.append((Key(cid, name, row.attempt), row.agent))
            fx.tx.activity(run, name, A.CANCELLED, message="campaign cancelled")
        fx.tx.campaign(run, CampaignState.CANCELLED, "cancelled by the user")
        fx.withdraw.append(cid)

    # ------------------------------------------------------------ invariants
    def validate(self) -> None:
        """Check the invariants of every campaign driven (AssertionError if broken)."""
        for run in self.runs.values():
            validate_run(run)


def validate_run(run: CampaignRun) -> None:
    """The invariants of one campaign between steps."""
    states: Mapping[str, str] = run.states()
    assert set(run.acts) == set(run.graph.order), f"{run.id}: activities and graph differ"
    open_ = sum(1 for s in states.values() if s not in TERMINAL)
    assert run.open == open_, f"{run.id}: open is {run.open}, {open_} are not final"
    assert all(s in ALLOWED for s in states.values()), f"{run.id}: unknown state"
    for name, row in run.acts.items():
        assert row.attempt >= 1, f"{run.id}/{name}: attempt {row.attempt}"
        preds_ok = all(states[p] == A.SUCCEEDED for p in run.graph.preds[name])
        if row.state not in (A.PENDING, A.SKIPPED, A.CANCELLED):
            assert preds_ok, f"{run.id}/{name}: {row.state} before its predecessors succeeded"
        if row.state == A.PENDING and run.state == CampaignState.RUNNING:
            assert not preds_ok, f"{run.id}/{name}: ready but still PENDING"
        if row.state in PLACED:
            assert row.agent, f"{run.id}/{name}: {row.state} without an agent"
    if run.state == CampaignState.RUNNING:
        assert open_ > 0, f"{run.id}: every activity ended but the campaign runs on"
    else:
        assert open_ == 0, f"{run.id}: {run.state} with {open_} activities not final"
        assert run.graph.final_state(states) == run.state or run.state == CampaignState.CANCELLED


def _final_message(run: CampaignRun, final: CampaignState) -> str:
    if final == CampaignState.SUCCEEDED:
        return f"all {len(run.acts)} activities succeeded"
    failed = [a for a in run.acts.values() if a.state == A.FAILED]
    if failed:
        first = failed[0]
        tail = first.detail.get("stderr_tail", "")
        msg = f"activity {first.name!r} failed: {first.message}"
        return msg + (f"\n{tail[-2000:]}" if tail else "")
    return "cancelled"
