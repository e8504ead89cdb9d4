"""Monitor side of the contract net (FIPA) as a pure, batched state machine.

One :class:`ContractNet` runs many negotiations at once, one per
:class:`TenderKey` (campaign, activity, attempt). The driver feeds inputs with
:meth:`ContractNet.step` (``now`` in seconds on any monotonic clock) and carries
out the returned :class:`Effects`: messages to send, timers to set or cancel, and
events (:class:`Placed`, :class:`Failed`, :class:`Deferred`, ...) to publish.

Protocol, per negotiation:

1. ``Announce`` sends a call for proposals to every candidate; all tenders for
   one agent in one step travel in one :class:`SendCFP`, and one deadline timer
   covers the batch. The deadline grows with the largest batch of the step
   (``bid_deadline_s + bid_deadline_per_tender_s * tenders``).
2. When every candidate answered, or the deadline passed, bids are ranked by
   estimate (ties broken with the injected rng) and the best is awarded
   (:class:`SendAward`, batched per agent, with an award deadline that likewise
   grows with the largest batch).
3. Accept -> :class:`Placed`. Reject (or silence, or the agent going down) -> the
   next best bid. When bids are exhausted, agents that rejected are asked again in
   a new round, up to ``max_rounds``.
4. When bids and rounds are exhausted (or nobody bid), the negotiation ends with
   the reasons of every agent asked:

   * :class:`Deferred` if some agent that did not go down could take it later: it
     refused only for lack of room (``Bid.busy``), did not answer before a
     deadline, or rejected the award (it had bid, so the activity fits it; a
     rejection means its slots were gone meanwhile, or it could not be reached).
     The driver offers the activity again later by announcing the same key: that
     starts a new negotiation (a new *generation* of the key).
   * :class:`Failed` otherwise: every agent refused because the activity does not
     fit it (labels, plugin, cpus...), or went down.

   No candidates at all -> :class:`Failed` at once.

Messages for finished or superseded negotiations are ignored and counted in
:attr:`ContractNet.stats`; an *acceptance* that arrives too late is reported as
:class:`LateAcceptance` so the driver can cancel that stray attempt (if a newer
negotiation of the key is running, that agent is no longer considered in it, so the
cancellation cannot hit a placement it makes). Wire messages carry no generation:

* a late bid from an earlier generation, arriving while the agent is asked again
  for the same key, is taken as its answer (it is a bid on the same tender);
* an acceptance is taken from the agent currently awarded in the running
  generation, whichever award it answers (either way that agent holds the
  attempt); but while that agent still owes an answer to an award of an earlier
  generation, its first *rejection* is taken as that old answer and ignored.
"""

from __future__ import annotations

import random
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from zambeze_mesh.scheduling.bidding import Bid, TenderKey
from zambeze_mesh.scheduling.contract_messages import (
    AgentDown,
    Announce,
    AwardDecisions,
    BidsReceived,
    ContractNetConfig,
    Deadline,
    Decision,
    Deferred,
    Effects,
    Event,
    Failed,
    Input,
    LateAcceptance,
    Placed,
    SendAward,
    SendCFP,
    SetTimer,
    Tender,
    Withdraw,
    Withdrawn,
)
from zambeze_mesh.scheduling.matching import no_candidates_message

__all__ = [
    "AgentDown",
    "Announce",
    "AwardDecisions",
    "BidsReceived",
    "ContractNet",
    "ContractNetConfig",
    "Deadline",
    "Decision",
    "Deferred",
    "Effects",
    "Event",
    "Failed",
    "Input",
    "LateAcceptance",
    "Placed",
    "SendAward",
    "SendCFP",
    "SetTimer",
    "Tender",
    "Withdraw",
    "Withdrawn",
]

# --------------------------------------------------------------------------- state

_Phase = Literal["bidding", "awarding"]
#: (generation of the key, round while bidding or award number while awarding)
_Stamp = tuple[int, int]


@dataclass
class _Negotiation:
    tender: Tender
    generation: int = 1
    round: int = 1
    phase: _Phase = "bidding"
    waiting: set[str] = field(default_factory=set)
    bids: dict[str, Bid] = field(default_factory=dict)
    # Awards the net had made to each bidder when its bid arrived (see _conclude_bidding).
    epoch: dict[str, int] = field(default_factory=dict)
    ranked: list[str] = field(default_factory=list)
    contacted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # refused only for lack of room
    rejected: dict[str, str] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    stray: set[str] = field(default_factory=set)  # told to cancel a late acceptance
    unanswered: set[str] = field(default_factory=set)  # awards given up undecided
    awarded_to: str | None = None
    award_seq: int = 0
    timer_id: int | None = None

    @property
    def seq(self) -> int:
        """Round while bidding, award number while awarding (guards stale timers)."""
        return self.round if self.phase == "bidding" else self.award_seq

    @property
    def stamp(self) -> _Stamp:
        """``seq`` within this generation of the key."""
        return (self.generation, self.seq)


@dataclass
class _Deferral:
    """What is kept of a deferred key until it is placed, failed or withdrawn."""

    generation: int
    #: agents whose award in an earlier generation was given up without a decision
    unanswered: set[str] = field(default_factory=set)


@dataclass
class _Timer:
    phase: _Phase
    entries: dict[TenderKey, _Stamp]


class ContractNet:
    """Many concurrent contract-net negotiations; see the module docs."""

    def __init__(self, config: ContractNetConfig | None = None, *, rng: random.Random) -> None:
        self.config = config or ContractNetConfig()
        self._rng = rng
        self._active: dict[TenderKey, _Negotiation] = {}
        self._finished: OrderedDict[TenderKey, str | None] = OrderedDict()
        self._deferred: OrderedDict[TenderKey, _Deferral] = OrderedDict()
        self._involved: dict[str, set[TenderKey]] = defaultdict(set)
        self._timers: dict[int, _Timer] = {}
        self._next_timer = 1
        self.stats: dict[str, int] = defaultdict(int)
        # Awards made to each agent so far (bids are corrected by those made after them).
        self._awards_to: dict[str, int] = defaultdict(int)
        # Per-step accumulators, flushed into Effects at the end of a step.
        self._fx = Effects()
        self._cfp_out: dict[str, list[tuple[TenderKey, _Stamp]]] = {}
        self._award_out: dict[str, list[tuple[TenderKey, _Stamp]]] = {}

    # -- public ----------------------------------------------------------

    def active(self) -> list[TenderKey]:
        """Keys of the negotiations still running."""
        return list(self._active)

    def awarded_to(self, key: TenderKey) -> str | None:
        """The agent currently holding the award of an active negotiation, if any."""
        neg = self._active.get(key)
        return neg.awarded_to if neg is not None else None

    def is_active(self, key: TenderKey) -> bool:
        """True while ``key`` is being negotiated."""
        return key in self._active

    def is_deferred(self, key: TenderKey) -> bool:
        """True when the last negotiation of ``key`` ended :class:`Deferred`.

        Stays true while a new negotiation of the key runs, until it is placed,
        failed or withdrawn (or forgotten after ``remember_finished`` deferrals).
        """
        return key in self._deferred

    def step(self, now: float, inp: Input) -> Effects:
        """Apply one input at time ``now``."""
        return self.step_many(now, [inp])

    def step_many(self, now: float, inputs: Sequence[Input]) -> Effects:
        """Apply several inputs at ``now``; messages to one agent are merged."""
        self._fx = Effects()
        for inp in inputs:
            self._apply(inp)
        return self._flush(now)

    # -- dispatch --------------------------------------------------------

    def _apply(self, inp: Input) -> None:
        if isinstance(inp, Announce):
            for tender in inp.tenders:
                self._announce(tender)
        elif isinstance(inp, BidsReceived):
            # Every bid of one answer was made against the same queue: the awards made
            # to that agent from now on are what corrects them.
            epoch = self._awards_to[inp.from_agent]
            for bid in inp.bids:
                self._bid(inp.from_agent, bid, epoch)
        elif isinstance(inp, Deadline):
            self._deadline(inp.timer_id)
        elif isinstance(inp, AwardDecisions):
            for d in inp.decisions:
                self._decision(inp.from_agent, d)
        elif isinstance(inp, AgentDown):
            self._agent_down(inp.name)
        elif isinstance(inp, Withdraw):
            for key in inp.keys:
                self._withdraw(key)
        else:  # pragma: no cover - guarded by the type checker
            raise TypeError(f"unknown contract-net input {inp!r}")

    def _announce(self, tender: Tender) -> None:
        key = tender.key
        if key in self._active or key in self._finished:
            self.stats["duplicate_announces"] += 1
            return
        cands = list(dict.fromkeys(tender.candidates))
        earlier = self._deferred.get(key)
        neg = _Negotiation(tender=tender)
        if earlier is not None:
            neg.generation = earlier.generation + 1
            self.stats["reannounced"] += 1
        self._active[key] = neg
        if not cands:
            self._finish(neg, Failed(key, no_candidates_message(tender.activity, tender.excluded)))
            return
        self._start_round(neg, cands)

    def _start_round(self, neg: _Negotiation, agents: list[str]) -> None:
        neg.phase = "bidding"
        neg.waiting = set(agents)
        neg.bids = {}
        neg.ranked = []
        neg.awarded_to = None
        key = neg.tender.key
        for agent in agents:
            neg.contacted.add(agent)
            self._involved[agent].add(key)
            self._cfp_out.setdefault(agent, []).append((key, neg.stamp))

    def _bid(self, agent: str, bid: Bid, epoch: int) -> None:
        neg = self._active.get(bid.key)
        if neg is None or neg.phase != "bidding" or agent not in neg.waiting:
            self.stats["late_bids"] += 1
            return
        neg.waiting.discard(agent)
        if bid.refused:
            neg.refused[agent] = bid.reason or ("busy" if bid.busy else "refused")
            if bid.busy:
                neg.busy.add(agent)
        elif not (0 <= bid.estimate_s < float("inf")):
            neg.refused[agent] = f"invalid estimate {bid.estimate_s}"
        else:
            neg.bids[agent] = bid
            neg.epoch[agent] = epoch
        if not neg.waiting:
            self._conclude_bidding(neg)

    def _deadline(self, timer_id: int) -> None:
        timer = self._timers.pop(timer_id, None)
        if timer is None:
            self.stats["stale_timers"] += 1
            return
        for key, stamp in timer.entries.items():
            neg = self._active.get(key)
            if neg is None or neg.phase != timer.phase or neg.stamp != stamp:
                continue
            neg.timer_id = None
            if timer.phase == "bidding":
                neg.silent |= neg.waiting
                neg.waiting = set()
                self._conclude_bidding(neg)
            elif neg.awarded_to is not None:
                neg.silent.add(neg.awarded_to)
                neg.unanswered.add(neg.awarded_to)
                neg.awarded_to = None
                self._award_next(neg)

    def _decision(self, agent: str, d: Decision) -> None:
        neg = self._active.get(d.key)
        # ``earlier``: this agent still owes the answer to an award of an earlier
        # (deferred) generation of the key, which its next decision most likely is.
        earlier = self._deferred.get(d.key)
        if earlier is not None and agent not in earlier.unanswered:
            earlier = None
        if neg is not None and neg.phase == "awarding" and neg.awarded_to == agent:
            if earlier is not None:
                earlier.unanswered.discard(agent)
                if not d.accepted:
                    self.stats["late_decisions"] += 1
                    return  # wait for the answer to the current award (or its deadline)
            self._detach_timer(neg)
            if d.accepted:
                bid = neg.bids[agent]
                self._finish(neg, Placed(d.key, agent, bid.estimate_s), placed_on=agent)
                return
            neg.rejected[agent] = d.reason or "rejected"
            neg.awarded_to = None
            self._award_next(neg)
            return
        self.stats["late_decisions"] += 1
        if earlier is not None:
            earlier.unanswered.discard(agent)
        elif neg is not None:
            neg.unanswered.discard(agent)
        if not d.accepted:
            return
        placed_on = self._finished.get(d.key) if neg is None else None
        if placed_on == agent:
            return  # a duplicate of the acceptance that placed it
        self._fx.events.append(LateAcceptance(d.key, agent))
        if neg is not None:
            # The driver cancels that attempt: never award this key to it meanwhile.
            self._set_aside(neg, agent)

    def _set_aside(self, neg: _Negotiation, agent: str) -> None:
        neg.stray.add(agent)
        if agent in neg.ranked:
            neg.ranked.remove(agent)
        if neg.phase == "bidding" and agent in neg.waiting:
            neg.waiting.discard(agent)
            if not neg.waiting:
                self._conclude_bidding(neg)

    def _agent_down(self, name: str) -> None:
        for key in sorted(self._involved.pop(name, set())):
            neg = self._active.get(key)
            if neg is None:
                continue
            neg.down.add(name)
            if neg.phase == "bidding" and name in neg.waiting:
                neg.waiting.discard(name)
                if not neg.waiting:
                    self._conclude_bidding(neg)
            elif neg.phase == "awarding" and neg.awarded_to == name:
                self._detach_timer(neg)
                neg.unanswered.add(name)
                neg.awarded_to = None
                self._award_next(neg)

    def _withdraw(self, key: TenderKey) -> None:
        neg = self._active.get(key)
        if neg is None:
            if self._deferred.pop(key, None) is not None:
                # Deferred, waiting to be offered again: it ends here for good.
                self._remember_finished(key, None)
                self._fx.events.append(Withdrawn(key, None))
                return
            self.stats["late_withdrawals"] += 1
            return
        awarded = neg.awarded_to if neg.phase == "awarding" else None
        self._finish(neg, Withdrawn(key, awarded))

    # -- negotiation steps -------------------------------------------------

    def _conclude_bidding(self, neg: _Negotiation) -> None:
        self._detach_timer(neg)
        live = sorted(a for a in neg.bids if a not in neg.down and a not in neg.stray)
        tie = {a: self._rng.random() for a in live}
        neg.ranked = sorted(live, key=lambda a: (self._estimate(neg, a), tie[a]))
        neg.phase = "awarding"
        self._award_next(neg)

    def _estimate(self, neg: _Negotiation, agent: str) -> float:
        """The agent's bid plus what the awards made to it since then add to it."""
        bid = neg.bids[agent]
        since = self._awards_to[agent] - neg.epoch.get(agent, self._awards_to[agent])
        return bid.estimate_s + since * max(0.0, bid.marginal_s)

    def _award_next(self, neg: _Negotiation) -> None:
        while neg.ranked:
            agent = neg.ranked.pop(0)
            if agent in neg.down or agent in neg.stray:
                continue
            neg.phase = "awarding"
            neg.awarded_to = agent
            neg.award_seq += 1
            self._awards_to[agent] += 1
            self._award_out.setdefault(agent, []).append((neg.tender.key, neg.stamp))
            return
        if not neg.bids:
            head = "no agent bid"
        else:
            again = sorted(
                a
                for a in neg.rejected
                if a not in neg.down
                and a not in neg.refused
                and a not in neg.silent
                and a not in neg.stray
            )
            if again and neg.round < self.config.max_rounds:
                neg.round += 1
                self.stats["extra_rounds"] += 1
                self._start_round(neg, again)
                return
            head = f"no agent accepted after {neg.round} round(s)"
        key = neg.tender.key
        if self._may_take_later(neg):
            self._finish(neg, Deferred(key, self._reason(neg, head)))
        else:
            self._finish(neg, Failed(key, self._reason(neg, head)))

    @staticmethod
    def _may_take_later(neg: _Negotiation) -> bool:
        """Did some agent still up say "not now" rather than "not this activity"?"""
        for agent in neg.contacted:
            if agent in neg.down:
                continue
            if agent in neg.refused:
                if agent in neg.busy:
                    return True
            elif agent in neg.rejected or agent in neg.silent or agent in neg.stray:
                return True
        return False

    def _reason(self, neg: _Negotiation, head: str, limit: int = 8) -> str:
        why: dict[str, str] = {}
        for agent in sorted(neg.contacted):
            if agent in neg.down:
                why[agent] = "agent down"
            elif agent in neg.refused:
                why[agent] = f"refused: {neg.refused[agent]}"
            elif agent in neg.rejected:
                why[agent] = f"rejected: {neg.rejected[agent]}"
            elif agent in neg.silent:
                why[agent] = "no answer before the deadline"
            elif agent in neg.stray:
                why[agent] = "cancelling a late acceptance"
        names = list(why)
        parts = "; ".join(f"{a}: {why[a]}" for a in names[:limit])
        more = f"; ... {len(names) - limit} more" if len(names) > limit else ""
        return f"activity {neg.tender.key.activity!r}: {head} ({parts}{more})"

    def _finish(self, neg: _Negotiation, event: Event, placed_on: str | None = None) -> None:
        key = neg.tender.key
        self._detach_timer(neg)
        del self._active[key]
        for agent in neg.contacted:
            keys = self._involved.get(agent)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._involved[agent]
        if isinstance(event, Deferred):
            # Not finished: the same key may be announced again (a new generation).
            earlier = self._deferred.pop(key, None)
            unanswered = earlier.unanswered if earlier is not None else set()
            self._deferred[key] = _Deferral(neg.generation, unanswered | neg.unanswered)
            while len(self._deferred) > self.config.remember_finished:
                self._deferred.popitem(last=False)
            self.stats["deferred"] += 1
        else:
            self._deferred.pop(key, None)
            self._remember_finished(key, placed_on)
            if isinstance(event, Placed):
                self.stats["placed"] += 1
            elif isinstance(event, Failed):
                self.stats["failed"] += 1
        self._fx.events.append(event)

    def _remember_finished(self, key: TenderKey, placed_on: str | None) -> None:
        self._finished[key] = placed_on
        while len(self._finished) > self.config.remember_finished:
            self._finished.popitem(last=False)

    def _detach_timer(self, neg: _Negotiation) -> None:
        tid = neg.timer_id
        if tid is None:
            return
        neg.timer_id = None
        timer = self._timers.get(tid)
        if timer is None:
            return
        timer.entries.pop(neg.tender.key, None)
        if not timer.entries:
            del self._timers[tid]
            self._fx.cancel_timers.append(tid)

    # -- flushing ----------------------------------------------------------

    def _flush(self, now: float) -> Effects:
        fx = self._fx
        cfps, self._cfp_out = self._cfp_out, {}
        awards, self._award_out = self._award_out, {}
        self._emit(fx, now, cfps, "bidding")
        self._emit(fx, now, awards, "awarding")
        self._fx = Effects()
        return fx

    def _emit(
        self,
        fx: Effects,
        now: float,
        out: dict[str, list[tuple[TenderKey, _Stamp]]],
        phase: _Phase,
    ) -> None:
        batches: list[tuple[str, tuple[Tender, ...]]] = []
        entries: dict[TenderKey, _Stamp] = {}
        for agent in sorted(out):
            tenders: list[Tender] = []
            for key, stamp in out[agent]:
                neg = self._active.get(key)
                if neg is None or neg.phase != phase or neg.stamp != stamp:
                    continue  # superseded within this step
                if phase == "bidding" and agent not in neg.waiting:
                    continue
                if phase == "awarding" and neg.awarded_to != agent:
                    continue
                tenders.append(neg.tender)
                entries[key] = stamp
            if tenders:
                batches.append((agent, tuple(tenders)))
        if not batches:
            return
        # One timer covers the step's batch: give the biggest message time to be answered.
        largest = max(len(batch) for _, batch in batches)
        cfg = self.config
        if phase == "bidding":
            at = now + cfg.bid_deadline_s + cfg.bid_deadline_per_tender_s * largest
            for agent, batch in batches:
                fx.messages.append(SendCFP(agent, batch, at))
                self.stats["cfp_messages"] += 1
        else:
            at = now + cfg.award_deadline_s + cfg.award_deadline_per_item_s * largest
            for agent, batch in batches:
                fx.messages.append(SendAward(agent, batch))
                self.stats["award_messages"] += 1
        tid = self._next_timer
        self._next_timer += 1
        self._timers[tid] = _Timer(phase, entries)
        for key in entries:
            self._active[key].timer_id = tid
        fx.timers.append(SetTimer(tid, at))
