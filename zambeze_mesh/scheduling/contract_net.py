"""Monitor side of the contract net (FIPA) as a pure, batched state machine.

One :class:`ContractNet` runs many negotiations at once, one per
:class:`TenderKey` (campaign, activity, attempt). The driver feeds inputs with
:meth:`ContractNet.step` (``now`` in seconds on any monotonic clock) and carries
out the returned :class:`Effects`: messages to send, timers to set or cancel, and
events (:class:`Placed`, :class:`Failed`, ...) to publish.

Protocol, per negotiation:

1. ``Announce`` sends a call for proposals to every candidate; all tenders for
   one agent in one step travel in one :class:`SendCFP`, and one deadline timer
   covers the batch.
2. When every candidate answered, or the deadline passed, bids are ranked by
   estimate (ties broken with the injected rng) and the best is awarded
   (:class:`SendAward`, batched per agent, with an award deadline).
3. Accept -> :class:`Placed`. Reject (or silence, or the agent going down) -> the
   next best bid. When bids are exhausted, agents that rejected are asked again in
   a new round, up to ``max_rounds``; then :class:`Failed`.
4. No bids at all (all refused, were silent or went down) -> :class:`Failed` with
   the reasons. No candidates -> :class:`Failed` at once.

Messages for finished or superseded negotiations are ignored and counted in
:attr:`ContractNet.stats`; an *acceptance* that arrives too late is reported as
:class:`LateAcceptance` so the driver can cancel that stray attempt.
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


@dataclass
class _Negotiation:
    tender: Tender
    round: int = 1
    phase: _Phase = "bidding"
    waiting: set[str] = field(default_factory=set)
    bids: dict[str, Bid] = field(default_factory=dict)
    ranked: list[str] = field(default_factory=list)
    contacted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    awarded_to: str | None = None
    award_seq: int = 0
    timer_id: int | None = None

    @property
    def seq(self) -> int:
        """Round while bidding, award number while awarding (guards stale timers)."""
        return self.round if self.phase == "bidding" else self.award_seq


@dataclass
class _Timer:
    phase: _Phase
    entries: dict[TenderKey, int]


class ContractNet:
    """Many concurrent contract-net negotiations; see the module docs."""

    def __init__(self, config: ContractNetConfig | None = None, *, rng: random.Random) -> None:
        self.config = config or ContractNetConfig()
        self._rng = rng
        self._active: dict[TenderKey, _Negotiation] = {}
        self._finished: OrderedDict[TenderKey, str | None] = OrderedDict()
        self._involved: dict[str, set[TenderKey]] = defaultdict(set)
        self._timers: dict[int, _Timer] = {}
        self._next_timer = 1
        self.stats: dict[str, int] = defaultdict(int)
        # Per-step accumulators, flushed into Effects at the end of a step.
        self._fx = Effects()
        self._cfp_out: dict[str, list[tuple[TenderKey, int]]] = {}
        self._award_out: dict[str, list[tuple[TenderKey, int]]] = {}

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
            for bid in inp.bids:
                self._bid(inp.from_agent, bid)
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
        neg = _Negotiation(tender=tender)
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
            self._cfp_out.setdefault(agent, []).append((key, neg.round))

    def _bid(self, agent: str, bid: Bid) -> None:
        neg = self._active.get(bid.key)
        if neg is None or neg.phase != "bidding" or agent not in neg.waiting:
            self.stats["late_bids"] += 1
            return
        neg.waiting.discard(agent)
        if bid.refused:
            neg.refused[agent] = bid.reason or "refused"
        elif not (0 <= bid.estimate_s < float("inf")):
            neg.refused[agent] = f"invalid estimate {bid.estimate_s}"
        else:
            neg.bids[agent] = bid
        if not neg.waiting:
            self._conclude_bidding(neg)

    def _deadline(self, timer_id: int) -> None:
        timer = self._timers.pop(timer_id, None)
        if timer is None:
            self.stats["stale_timers"] += 1
            return
        for key, seq in timer.entries.items():
            neg = self._active.get(key)
            if neg is None or neg.phase != timer.phase or neg.seq != seq:
                continue
            neg.timer_id = None
            if timer.phase == "bidding":
                neg.silent |= neg.waiting
                neg.waiting = set()
                self._conclude_bidding(neg)
            elif neg.awarded_to is not None:
                neg.silent.add(neg.awarded_to)
                neg.awarded_to = None
                self._award_next(neg)

    def _decision(self, agent: str, d: Decision) -> None:
        neg = self._active.get(d.key)
        if neg is None or neg.phase != "awarding" or neg.awarded_to != agent:
            self.stats["late_decisions"] += 1
            placed_on = self._finished.get(d.key) if neg is None else None
            if d.accepted and placed_on != agent:
                self._fx.events.append(LateAcceptance(d.key, agent))
            return
        self._detach_timer(neg)
        if d.accepted:
            bid = neg.bids[agent]
            self._finish(neg, Placed(d.key, agent, bid.estimate_s), placed_on=agent)
            return
        neg.rejected[agent] = d.reason or "rejected"
        neg.awarded_to = None
        self._award_next(neg)

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
                neg.awarded_to = None
                self._award_next(neg)

    def _withdraw(self, key: TenderKey) -> None:
        neg = self._active.get(key)
        if neg is None:
            self.stats["late_withdrawals"] += 1
            return
        awarded = neg.awarded_to if neg.phase == "awarding" else None
        self._finish(neg, Withdrawn(key, awarded))

    # -- negotiation steps -------------------------------------------------

    def _conclude_bidding(self, neg: _Negotiation) -> None:
        self._detach_timer(neg)
        live = sorted(a for a in neg.bids if a not in neg.down)
        tie = {a: self._rng.random() for a in live}
        neg.ranked = sorted(live, key=lambda a: (neg.bids[a].estimate_s, tie[a]))
        neg.phase = "awarding"
        self._award_next(neg)

    def _award_next(self, neg: _Negotiation) -> None:
        while neg.ranked:
            agent = neg.ranked.pop(0)
            if agent in neg.down:
                continue
            neg.phase = "awarding"
            neg.awarded_to = agent
            neg.award_seq += 1
            self._award_out.setdefault(agent, []).append((neg.tender.key, neg.award_seq))
            return
        if not neg.bids:
            self._finish(neg, Failed(neg.tender.key, self._reason(neg, "no agent bid")))
            return
        again = sorted(
            a
            for a in neg.rejected
            if a not in neg.down and a not in neg.refused and a not in neg.silent
        )
        if again and neg.round < self.config.max_rounds:
            neg.round += 1
            self.stats["extra_rounds"] += 1
            self._start_round(neg, again)
            return
        head = f"no agent accepted after {neg.round} round(s)"
        self._finish(neg, Failed(neg.tender.key, self._reason(neg, head)))

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
        self._finished[key] = placed_on
        while len(self._finished) > self.config.remember_finished:
            self._finished.popitem(last=False)
        if isinstance(event, Placed):
            self.stats["placed"] += 1
        elif isinstance(event, Failed):
            self.stats["failed"] += 1
        self._fx.events.append(event)

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
        out: dict[str, list[tuple[TenderKey, int]]],
        phase: _Phase,
    ) -> None:
        if phase == "bidding":
            at = now + self.config.bid_deadline_s
        else:
            at = now + self.config.award_deadline_s
        entries: dict[TenderKey, int] = {}
        for agent in sorted(out):
            tenders = []
            for key, seq in out[agent]:
                neg = self._active.get(key)
                if neg is None or neg.phase != phase or neg.seq != seq:
                    continue  # superseded within this step
                if phase == "bidding" and agent not in neg.waiting:
                    continue
                if phase == "awarding" and neg.awarded_to != agent:
                    continue
                tenders.append(neg.tender)
                entries[key] = seq
            if not tenders:
                continue
            if phase == "bidding":
                fx.messages.append(SendCFP(agent, tuple(tenders), at))
                self.stats["cfp_messages"] += 1
            else:
                fx.messages.append(SendAward(agent, tuple(tenders)))
                self.stats["award_messages"] += 1
        if not entries:
            return
        tid = self._next_timer
        self._next_timer += 1
        self._timers[tid] = _Timer(phase, entries)
        for key in entries:
            self._active[key].timer_id = tid
        fx.timers.append(SetTimer(tid, at))
