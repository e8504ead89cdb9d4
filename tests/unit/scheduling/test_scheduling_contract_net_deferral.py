"""Contract net: deferral (busy or silent agents), re-announcement and deadline scaling."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from zambeze_mesh.scheduling import Deferred as ExportedDeferred
from zambeze_mesh.scheduling.bidding import Bid, TenderKey, estimate_bid
from zambeze_mesh.scheduling.contract_net import (
    AgentDown,
    Announce,
    AwardDecisions,
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
    Tender,
    Withdraw,
    Withdrawn,
)
from zambeze_mesh.scheduling.model import ActivityDef, AgentInfo


def key(i: int = 0, attempt: int = 1) -> TenderKey:
    return TenderKey("camp", f"act{i}", attempt)


def tender(i: int = 0, cands: tuple[str, ...] = ("a", "b", "c")) -> Tender:
    return Tender(key(i), ActivityDef(name=f"act{i}", kind="shell"), cands)


def bid(k: TenderKey, est: float) -> Bid:
    return Bid(k, estimate_s=est)


def net(seed: int = 0, **cfg: object) -> ContractNet:
    return ContractNet(ContractNetConfig(**cfg), rng=random.Random(seed))  # type: ignore[arg-type]


def defer_by_silent_award(cn: ContractNet, k: TenderKey) -> None:
    """Negotiate ``k`` over a, b: b busy, a bids and never answers its award."""
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("b", [Bid.busy_refusal(k, "queue is full")]))
    fx = cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    assert [m.to for m in fx.awards] == ["a"]
    fx = cn.step(6.0, Deadline(fx.timers[0].timer_id))
    assert [e.key for e in fx.deferred] == [k] and fx.messages == []
    assert cn.is_deferred(k) and not cn.is_active(k)


def reannounce_and_award_a_again(cn: ContractNet, k: TenderKey) -> None:
    """After :func:`defer_by_silent_award`: announce ``k`` again; a outbids b and is
    awarded while its answer to the first award may still arrive."""
    defer_by_silent_award(cn, k)
    cn.step(7.0, Announce([tender(cands=("a", "b"))]))
    cn.step(7.1, BidsReceived("b", [bid(k, 5.0)]))
    fx = cn.step(7.1, BidsReceived("a", [bid(k, 1.0)]))
    assert [m.to for m in fx.awards] == ["a"]


# --------------------------------------------------------------------------- bids


def test_busy_refusal_constructor() -> None:
    k = key()
    b = Bid.busy_refusal(k, "queue is full")
    assert b == Bid(k, refused=True, reason="queue is full", busy=True)
    assert Bid.refusal(k, "no plugin 'dask'").busy is False
    assert Bid(k, estimate_s=1.0).busy is False


def test_capability_refusal_of_estimate_bid_is_not_busy() -> None:
    act = ActivityDef(name="x", kind="shell")
    agent = AgentInfo(name="a", plugins=frozenset({"python"}))
    b = estimate_bid(act, key=key(), agent=agent)
    assert b.refused and not b.busy


def test_deferred_is_exported() -> None:
    assert ExportedDeferred is Deferred


# --------------------------------------------------------------------------- outcomes


def test_all_busy_is_deferred() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender()]))
    for name in ("a", "b"):
        cn.step(0.1, BidsReceived(name, [Bid.busy_refusal(k, "queue is full")]))
    fx = cn.step(0.1, BidsReceived("c", [Bid.busy_refusal(k, "queue is full")]))
    assert fx.messages == [] and fx.failed == [] and fx.cancel_timers == [1]
    assert fx.events == fx.deferred and len(fx.deferred) == 1
    reason = fx.deferred[0].reason
    assert reason.startswith("activity 'act0': no agent bid (")
    for name in ("a", "b", "c"):
        assert f"{name}: refused: queue is full" in reason
    assert cn.stats["deferred"] == 1 and cn.stats["failed"] == 0
    assert not cn.is_active(k) and cn.is_deferred(k)


def test_busy_and_capability_refusals_are_deferred() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender()]))
    cn.step(0.1, BidsReceived("a", [Bid.refusal(k, "no plugin 'dask'")]))
    cn.step(0.1, BidsReceived("b", [Bid.busy_refusal(k, "queue is full")]))
    fx = cn.step(0.1, BidsReceived("c", [Bid.refusal(k, "needs 4 cpus, has 2")]))
    assert fx.failed == [] and len(fx.deferred) == 1
    reason = fx.deferred[0].reason
    assert "a: refused: no plugin 'dask'" in reason
    assert "b: refused: queue is full" in reason
    assert "c: refused: needs 4 cpus, has 2" in reason


def test_capability_refusals_only_fail() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [Bid.refusal(k, "no plugin 'dask'")]))
    fx = cn.step(0.1, BidsReceived("b", [bid(k, float("inf"))]))  # invalid: not busy
    assert fx.deferred == [] and len(fx.failed) == 1
    assert cn.stats["failed"] == 1 and cn.stats["deferred"] == 0
    assert not cn.is_deferred(k)
    # failed for good: announcing it again is a duplicate
    assert cn.step(1.0, Announce([tender(cands=("a", "b"))])) == Effects()
    assert cn.stats["duplicate_announces"] == 1


def test_silent_and_capability_refusal_is_deferred() -> None:
    cn = net()
    k = key()
    fx = cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [Bid.refusal(k, "no plugin 'dask'")]))
    fx = cn.step(0.6, Deadline(fx.timers[0].timer_id))
    assert fx.failed == [] and len(fx.deferred) == 1
    assert "b: no answer before the deadline" in fx.deferred[0].reason


def test_all_down_fails() -> None:
    cn = net()
    cn.step(0.0, Announce([tender()]))
    for name in ("a", "b"):
        cn.step(0.1, AgentDown(name))
    fx = cn.step(0.1, AgentDown("c"))
    assert fx.deferred == [] and len(fx.failed) == 1
    for name in ("a", "b", "c"):
        assert f"{name}: agent down" in fx.failed[0].reason


def test_busy_agent_that_went_down_does_not_defer() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [Bid.busy_refusal(k, "queue is full")]))
    cn.step(0.2, AgentDown("a"))
    fx = cn.step(0.3, BidsReceived("b", [Bid.refusal(k, "no plugin 'dask'")]))
    assert fx.deferred == [] and len(fx.failed) == 1
    assert "a: agent down" in fx.failed[0].reason


def test_silent_agents_that_went_down_do_not_defer() -> None:
    cn = net()
    k = key()
    fx = cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    tid = fx.timers[0].timer_id
    cn.step(0.1, BidsReceived("a", [Bid.refusal(k, "no plugin 'dask'")]))
    cn.step(0.2, AgentDown("b"))
    assert cn.step(0.6, Deadline(tid)).events == []  # already concluded
    assert cn.stats["failed"] == 1 and cn.stats["deferred"] == 0


def test_award_rejection_then_busy_in_next_round_is_deferred() -> None:
    cn = net(max_rounds=3)
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    fx = cn.step(0.1, BidsReceived("b", [Bid.refusal(k, "label role=hpc not matched")]))
    assert [m.to for m in fx.awards] == ["a"]
    fx = cn.step(0.2, AwardDecisions("a", [Decision(k, False, "slots gone: queue is full")]))
    assert [m.to for m in fx.cfps] == ["a"]  # round 2: only the agent that rejected
    fx = cn.step(0.3, BidsReceived("a", [Bid.busy_refusal(k, "queue is full")]))
    assert fx.failed == [] and len(fx.deferred) == 1
    assert fx.deferred[0].reason.startswith("activity 'act0': no agent bid (")


def test_rejections_in_every_round_are_deferred() -> None:
    cn = net(max_rounds=2)
    k = key()
    cn.step(0.0, Announce([tender(cands=("a",))]))
    fx = cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    fx = cn.step(0.2, AwardDecisions("a", [Decision(k, False, "slots gone")]))
    fx = cn.step(0.3, BidsReceived("a", [bid(k, 1.0)]))
    fx = cn.step(0.4, AwardDecisions("a", [Decision(k, False, "slots gone")]))
    assert len(fx.deferred) == 1 and cn.stats["extra_rounds"] == 1
    assert "no agent accepted after 2 round(s) (a: rejected: slots gone)" in fx.deferred[0].reason


def test_no_candidates_still_fails_at_once() -> None:
    cn = net()
    fx = cn.step(0.0, Announce([tender(cands=())]))
    assert fx.deferred == [] and len(fx.failed) == 1 and fx.messages == []


# --------------------------------------------------------------------------- re-announce


def test_reannounce_after_deferred_starts_a_new_negotiation() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [Bid.busy_refusal(k, "queue is full")]))
    fx = cn.step(0.1, BidsReceived("b", [Bid.busy_refusal(k, "queue is full")]))
    assert len(fx.deferred) == 1
    fx = cn.step(2.0, Announce([tender(cands=("a", "b"))]))
    assert sorted(m.to for m in fx.cfps) == ["a", "b"] and len(fx.timers) == 1
    assert cn.is_active(k) and cn.stats["reannounced"] == 1
    assert cn.stats["duplicate_announces"] == 0
    # a second announce while the new negotiation runs is a duplicate
    assert cn.step(2.0, Announce([tender(cands=("a", "b"))])) == Effects()
    assert cn.stats["duplicate_announces"] == 1
    cn.step(2.1, BidsReceived("a", [Bid.busy_refusal(k, "queue is full")]))
    fx = cn.step(2.1, BidsReceived("b", [bid(k, 3.0)]))
    assert [(m.to, m.keys) for m in fx.awards] == [("b", (k,))]
    fx = cn.step(2.2, AwardDecisions("b", [Decision(k, True)]))
    assert fx.events == [Placed(k, "b", 3.0)]
    assert not cn.is_deferred(k) and cn.stats["deferred"] == 1 and cn.stats["placed"] == 1
    # placed for good: no third negotiation
    assert cn.step(3.0, Announce([tender(cands=("a", "b"))])) == Effects()


def test_deferred_again_then_placed() -> None:
    cn = net()
    k = key()
    for _ in range(3):
        fx = cn.step(0.0, Announce([tender(cands=("a",))]))
        fx = cn.step(0.6, Deadline(fx.timers[0].timer_id))
        assert len(fx.deferred) == 1
    cn.step(1.0, Announce([tender(cands=("a",))]))
    cn.step(1.1, BidsReceived("a", [bid(k, 1.0)]))
    fx = cn.step(1.2, AwardDecisions("a", [Decision(k, True)]))
    assert fx.placed == [Placed(k, "a", 1.0)]
    assert cn.stats["deferred"] == 3 and cn.stats["reannounced"] == 3


def test_late_acceptance_of_deferred_negotiation_does_not_place_new_one() -> None:
    cn = net()
    k = key()
    defer_by_silent_award(cn, k)
    fx = cn.step(7.0, Announce([tender(cands=("a", "b"))]))
    assert sorted(m.to for m in fx.cfps) == ["a", "b"]
    # a finally accepts the award of the deferred negotiation
    fx = cn.step(7.1, AwardDecisions("a", [Decision(k, True)]))
    assert fx.events == [LateAcceptance(k, "a")] and fx.placed == []
    assert cn.is_active(k) and cn.awarded_to(k) is None
    # a is cancelling that attempt: not awarded this key in the new negotiation
    cn.step(7.2, BidsReceived("a", [bid(k, 0.1)]))
    assert cn.stats["late_bids"] == 1
    fx = cn.step(7.2, BidsReceived("b", [bid(k, 2.0)]))
    assert [(m.to, m.keys) for m in fx.awards] == [("b", (k,))]
    fx = cn.step(7.3, AwardDecisions("b", [Decision(k, True)]))
    assert fx.events == [Placed(k, "b", 2.0)]


def test_set_aside_agent_alone_defers_again() -> None:
    cn = net()
    k = key()
    defer_by_silent_award(cn, k)
    cn.step(7.0, Announce([tender(cands=("a",))]))
    fx = cn.step(7.1, AwardDecisions("a", [Decision(k, True)]))
    assert LateAcceptance(k, "a") in fx.events and len(fx.deferred) == 1
    assert "a: cancelling a late acceptance" in fx.deferred[0].reason
    assert fx.cancel_timers  # the bid deadline of the new negotiation is not needed


def test_late_acceptance_from_agent_awarded_in_new_negotiation_places_it() -> None:
    cn = net()
    k = key()
    reannounce_and_award_a_again(cn, k)
    # whichever award it answers, a holds the attempt: placed
    fx = cn.step(7.2, AwardDecisions("a", [Decision(k, True)]))
    assert fx.events == [Placed(k, "a", 1.0)]
    # the answer to the other award is a duplicate, not a stray attempt
    assert cn.step(7.3, AwardDecisions("a", [Decision(k, True)])).events == []


def test_late_rejection_of_earlier_award_is_not_taken_for_the_new_one() -> None:
    cn = net()
    k = key()
    reannounce_and_award_a_again(cn, k)
    # a's rejection of the old award arrives first: still waiting for the new answer
    fx = cn.step(7.2, AwardDecisions("a", [Decision(k, False, "slots gone")]))
    assert fx == Effects() and cn.awarded_to(k) == "a"
    assert cn.stats["late_decisions"] == 1
    fx = cn.step(7.3, AwardDecisions("a", [Decision(k, True)]))
    assert fx.events == [Placed(k, "a", 1.0)]


def test_second_rejection_from_awarded_agent_is_taken() -> None:
    cn = net()
    k = key()
    reannounce_and_award_a_again(cn, k)
    cn.step(7.2, AwardDecisions("a", [Decision(k, False, "slots gone")]))  # old award
    fx = cn.step(7.3, AwardDecisions("a", [Decision(k, False, "slots gone")]))  # new one
    assert [m.to for m in fx.awards] == ["b"]


def test_late_acceptance_while_deferred_is_reported() -> None:
    cn = net()
    k = key()
    defer_by_silent_award(cn, k)
    fx = cn.step(7.0, AwardDecisions("a", [Decision(k, True)]))
    assert fx.events == [LateAcceptance(k, "a")]
    fx = cn.step(7.0, AwardDecisions("a", [Decision(k, False)]))
    assert fx.events == []


def test_late_bid_from_deferred_negotiation_counts_for_the_new_one() -> None:
    # Bids carry no generation: a late answer to the same tender is still a bid on it.
    cn = net()
    k = key()
    fx = cn.step(0.0, Announce([tender(cands=("a",))]))
    assert len(cn.step(0.6, Deadline(fx.timers[0].timer_id)).deferred) == 1
    cn.step(1.0, Announce([tender(cands=("a",))]))
    fx = cn.step(1.1, BidsReceived("a", [bid(k, 2.0)]))
    assert [m.to for m in fx.awards] == ["a"]
    cn.step(1.1, BidsReceived("a", [bid(k, 2.0)]))  # its answer to the new call
    assert cn.stats["late_bids"] == 1


def test_withdraw_of_deferred_key_ends_it() -> None:
    cn = net()
    k = key()
    defer_by_silent_award(cn, k)
    fx = cn.step(7.0, Withdraw([k]))
    assert fx.events == [Withdrawn(k, None)] and not cn.is_deferred(k)
    assert cn.step(7.1, Announce([tender(cands=("a", "b"))])) == Effects()
    assert cn.stats["duplicate_announces"] == 1
    # the stray acceptance of the old award is still reported
    assert cn.step(7.2, AwardDecisions("a", [Decision(k, True)])).events == [LateAcceptance(k, "a")]


def test_defer_and_reannounce_in_one_step_sends_each_tender_once() -> None:
    cn = net()
    k = key()
    fx = cn.step_many(
        0.0,
        [
            Announce([tender(cands=("a",))]),
            BidsReceived("a", [Bid.busy_refusal(k, "queue is full")]),
            Announce([tender(cands=("a",))]),
        ],
    )
    assert len(fx.deferred) == 1
    assert [(m.to, len(m.tenders)) for m in fx.cfps] == [("a", 1)] and len(fx.timers) == 1
    assert cn.is_active(k)
    fx = cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    assert [m.to for m in fx.awards] == ["a"]


# --------------------------------------------------------------------------- deadlines


def test_bid_deadline_grows_with_tenders() -> None:
    cn = net()
    fx = cn.step(10.0, Announce([tender(i) for i in range(2000)]))
    assert len(fx.cfps) == 3 and len(fx.timers) == 1
    want = 10.0 + 0.5 + 0.0005 * 2000
    assert fx.timers[0].at == pytest.approx(want)
    assert all(m.deadline == fx.timers[0].at for m in fx.cfps)


def test_bid_deadline_uses_largest_message_of_the_step() -> None:
    cn = net(bid_deadline_s=1.0, bid_deadline_per_tender_s=0.01)
    tenders = [tender(i, ("a",)) for i in range(100)] + [tender(100, ("b",))]
    fx = cn.step(0.0, Announce(tenders))
    assert sorted((m.to, len(m.tenders)) for m in fx.cfps) == [("a", 100), ("b", 1)]
    assert fx.timers[0].at == pytest.approx(2.0)
    assert {m.deadline for m in fx.cfps} == {fx.timers[0].at}


def test_no_per_tender_time_gives_fixed_deadlines() -> None:
    cn = net(bid_deadline_per_tender_s=0.0, award_deadline_per_item_s=0.0)
    fx = cn.step(0.0, Announce([tender(i, ("a",)) for i in range(500)]))
    assert fx.timers[0].at == 0.5
    fx = cn.step(0.1, BidsReceived("a", [bid(key(i), 1.0) for i in range(500)]))
    assert fx.timers[0].at == 0.1 + 5.0


def test_award_deadline_grows_with_items() -> None:
    cn = net(award_deadline_s=2.0, award_deadline_per_item_s=0.01)
    cn.step(0.0, Announce([tender(i, ("a",)) for i in range(300)]))
    fx = cn.step(0.2, BidsReceived("a", [bid(key(i), 1.0) for i in range(300)]))
    assert [(m.to, len(m.tenders)) for m in fx.awards] == [("a", 300)]
    assert [t.at for t in fx.timers] == [pytest.approx(0.2 + 2.0 + 3.0)]


def test_presets_keep_their_timing_and_scale() -> None:
    assert ContractNetConfig.local() == ContractNetConfig()
    lan, wan = ContractNetConfig.lan(), ContractNetConfig.wan()
    assert (lan.bid_deadline_s, lan.award_deadline_s) == (1.0, 5.0)
    assert (wan.bid_deadline_s, wan.award_deadline_s) == (3.0, 15.0)
    for cfg in (ContractNetConfig.local(), lan, wan):
        assert cfg.bid_deadline_per_tender_s == 0.0005
        assert cfg.award_deadline_per_item_s == 0.0005


# --------------------------------------------------------------------------- property

AGENTS = ("a", "b", "c")

answer = hs.tuples(hs.just("answer"), hs.integers(0, 50), hs.sampled_from(("bid", "busy", "no")))
decide = hs.tuples(hs.just("decide"), hs.integers(0, 50), hs.sampled_from(("yes", "no")))
action = hs.one_of(
    answer,
    answer,
    answer,
    decide,
    decide,
    hs.tuples(hs.just("stale"), hs.integers(0, 50), hs.sampled_from(("yes", "no"))),
    hs.tuples(hs.just("down"), hs.integers(0, 2), hs.just("")),
    hs.tuples(hs.just("timer"), hs.integers(0, 50), hs.just("")),
)


@settings(max_examples=200, deadline=None)
@given(actions=hs.lists(action, max_size=200), seed=hs.integers(0, 1000))
def test_deferred_keys_are_offered_again_until_they_end(
    actions: list[tuple[str, int, str]], seed: int
) -> None:
    """Deferred keys are re-announced at once; every generation ends exactly once,
    nothing follows a final Placed/Failed, and no key is placed twice."""
    cn = ContractNet(ContractNetConfig(max_rounds=2), rng=random.Random(seed))
    keys = [key(i) for i in range(4)]
    gens = dict.fromkeys(keys, 0)
    final: dict[TenderKey, Placed | Failed] = {}
    timers: list[int] = []
    cfps: list[tuple[str, TenderKey]] = []
    awards: list[tuple[str, TenderKey]] = []
    answered: list[tuple[str, TenderKey]] = []  # awards of any generation, answered or not
    down: set[str] = set()
    now = 0.0

    def announce(ks: list[TenderKey]) -> None:
        for k in ks:
            gens[k] += 1
        cands = tuple(a for a in AGENTS if a not in down)
        apply(cn.step(now, Announce([tender(keys.index(k), cands) for k in ks])))

    def apply(fx: Effects) -> None:
        timers.extend(t.timer_id for t in fx.timers)
        for cfp in fx.cfps:
            cfps.extend((cfp.to, t.key) for t in cfp.tenders)
        for award in fx.awards:
            awards.extend((award.to, k) for k in award.keys)
            answered.extend((award.to, k) for k in award.keys)
        again = []
        for ev in fx.events:
            if isinstance(ev, Placed | Failed | Deferred):
                assert ev.key not in final, ("event after the end", ev)
                assert not cn.is_active(ev.key)
            if isinstance(ev, Placed | Failed):
                final[ev.key] = ev
            elif isinstance(ev, Deferred) and gens[ev.key] < 4:
                again.append(ev.key)
        if again:
            announce(again)

    announce(keys)
    for kind, i, what in actions:
        now += 0.01
        if kind == "answer" and cfps:
            to, k = cfps.pop(i % len(cfps))
            b = {
                "bid": bid(k, float(i % 7)),
                "busy": Bid.busy_refusal(k, "queue is full"),
                "no": Bid.refusal(k, "no"),
            }[what]
            apply(cn.step(now, BidsReceived(to, [b])))
        elif kind == "decide" and awards:
            to, k = awards.pop(i % len(awards))
            apply(cn.step(now, AwardDecisions(to, [Decision(k, what == "yes")])))
        elif kind == "stale" and answered:
            to, k = answered[i % len(answered)]
            apply(cn.step(now, AwardDecisions(to, [Decision(k, what == "yes")])))
        elif kind == "down":
            down.add(AGENTS[i])
            apply(cn.step(now, AgentDown(AGENTS[i])))
        elif kind == "timer" and timers:
            apply(cn.step(now, Deadline(timers.pop(i % len(timers)))))
    for _ in range(50):
        if not cn.active():
            break
        pending = list(timers)
        timers.clear()
        for tid in pending:
            now += 100
            apply(cn.step(now, Deadline(tid)))
    assert cn.active() == []
    for k in keys:
        assert (k in final) != cn.is_deferred(k)
    assert cn.stats["placed"] + cn.stats["failed"] == len(final)
    assert cn.stats["deferred"] == sum(gens.values()) - len(final)
