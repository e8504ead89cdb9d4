"""Contract-net negotiation state machine (monitor side)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as hs

from zambeze_mesh.scheduling.bidding import Bid, TenderKey
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
from zambeze_mesh.scheduling.model import ActivityDef


def key(i: int = 0, attempt: int = 1) -> TenderKey:
    return TenderKey("camp", f"act{i}", attempt)


def tender(i: int = 0, cands: tuple[str, ...] = ("a", "b", "c"), **kw: object) -> Tender:
    act = ActivityDef(name=f"act{i}", kind="shell")
    return Tender(key(i), act, cands, **kw)  # type: ignore[arg-type]


def bid(k: TenderKey, est: float) -> Bid:
    return Bid(k, estimate_s=est)


def net(seed: int = 0, **cfg: object) -> ContractNet:
    return ContractNet(ContractNetConfig(**cfg), rng=random.Random(seed))  # type: ignore[arg-type]


def test_single_tender_happy_path() -> None:
    cn = net()
    k = key()
    fx = cn.step(0.0, Announce([tender()]))
    assert sorted(m.to for m in fx.cfps) == ["a", "b", "c"]
    bid_at = 0.5 + 0.0005  # bid_deadline_s + bid_deadline_per_tender_s * 1 tender
    assert all(m.deadline == bid_at for m in fx.cfps)
    assert len(fx.timers) == 1 and fx.timers[0].at == bid_at
    assert cn.step(0.1, BidsReceived("a", [bid(k, 3.0)])).messages == []
    cn.step(0.1, BidsReceived("b", [bid(k, 1.0)]))
    fx = cn.step(0.2, BidsReceived("c", [Bid.refusal(k, "busy")]))
    assert [(m.to, m.keys) for m in fx.awards] == [("b", (k,))]
    assert fx.cancel_timers == [1]  # everyone answered: bid deadline not needed
    assert len(fx.timers) == 1 and fx.timers[0].at == 0.2 + 5.0 + 0.0005
    fx = cn.step(0.3, AwardDecisions("b", [Decision(k, True)]))
    assert fx.events == [Placed(k, "b", 1.0)]
    assert not cn.is_active(k) and cn.stats["placed"] == 1


def test_batching_fifty_tenders_three_agents() -> None:
    cn = net()
    fx = cn.step(0.0, Announce([tender(i) for i in range(50)]))
    assert len(fx.cfps) == 3 and len(fx.timers) == 1
    assert all(len(m.tenders) == 50 for m in fx.cfps)
    # all bids arrive in one message per agent; b wins everything
    for name, est in (("a", 2.0), ("b", 1.0), ("c", 3.0)):
        fx = cn.step(0.1, BidsReceived(name, [bid(key(i), est) for i in range(50)]))
    assert len(fx.awards) == 1 and fx.awards[0].to == "b" and len(fx.awards[0].tenders) == 50
    fx = cn.step(0.2, AwardDecisions("b", [Decision(key(i), True) for i in range(50)]))
    assert len(fx.placed) == 50 and {p.agent for p in fx.placed} == {"b"}


def test_partial_candidate_sets_are_batched_per_agent() -> None:
    cn = net()
    fx = cn.step(0.0, Announce([tender(0, ("a",)), tender(1, ("a", "b")), tender(2, ("b",))]))
    by_agent = {m.to: sorted(t.key.activity for t in m.tenders) for m in fx.cfps}
    assert by_agent == {"a": ["act0", "act1"], "b": ["act1", "act2"]}


def test_ties_are_broken_randomly() -> None:
    winners = set()
    for seed in range(40):
        cn = net(seed)
        k = key()
        cn.step(0.0, Announce([tender()]))
        cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
        cn.step(0.1, BidsReceived("b", [bid(k, 1.0)]))
        fx = cn.step(0.1, BidsReceived("c", [bid(k, 1.0)]))
        winners.add(fx.awards[0].to)
    assert len(winners) > 1


def test_deadline_with_silent_agent() -> None:
    cn = net()
    k = key()
    fx = cn.step(0.0, Announce([tender()]))
    tid = fx.timers[0].timer_id
    cn.step(0.1, BidsReceived("a", [bid(k, 2.0)]))
    cn.step(0.1, BidsReceived("b", [bid(k, 4.0)]))
    fx = cn.step(0.5, Deadline(tid))
    assert [m.to for m in fx.awards] == ["a"]
    # the silent agent finally bids: ignored
    fx = cn.step(0.6, BidsReceived("c", [bid(k, 0.1)]))
    assert fx.messages == [] and cn.stats["late_bids"] == 1


def test_all_silent_is_deferred_after_deadline() -> None:
    cn = net()
    fx = cn.step(0.0, Announce([tender()]))
    fx = cn.step(0.5, Deadline(fx.timers[0].timer_id))
    assert fx.failed == [] and len(fx.deferred) == 1
    assert "no answer before the deadline" in fx.deferred[0].reason


def test_reject_moves_to_next_bid() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender()]))
    cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    cn.step(0.1, BidsReceived("b", [bid(k, 2.0)]))
    fx = cn.step(0.1, BidsReceived("c", [bid(k, 3.0)]))
    assert fx.awards[0].to == "a"
    fx = cn.step(0.2, AwardDecisions("a", [Decision(k, False, "slots gone")]))
    assert [m.to for m in fx.awards] == ["b"] and fx.cfps == []
    fx = cn.step(0.3, AwardDecisions("b", [Decision(k, True)]))
    assert fx.events == [Placed(k, "b", 2.0)]


def test_rejections_exhaust_bids_then_new_round_then_defer() -> None:
    cn = net(max_rounds=2)
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    cn.step(0.1, BidsReceived("b", [bid(k, 2.0)]))
    cn.step(0.2, AwardDecisions("a", [Decision(k, False, "slots gone")]))
    fx = cn.step(0.3, AwardDecisions("b", [Decision(k, False, "slots gone")]))
    assert sorted(m.to for m in fx.cfps) == ["a", "b"]  # round 2
    assert cn.stats["extra_rounds"] == 1
    cn.step(0.4, BidsReceived("a", [bid(k, 1.0)]))
    fx = cn.step(0.4, BidsReceived("b", [Bid.refusal(k, "queue full")]))
    assert [m.to for m in fx.awards] == ["a"]
    fx = cn.step(0.5, AwardDecisions("a", [Decision(k, False, "slots gone")]))
    # a had room once and may again: offered later rather than failed
    assert fx.failed == [] and len(fx.deferred) == 1
    reason = fx.deferred[0].reason
    assert "no agent accepted after 2 round(s)" in reason
    assert "a: rejected: slots gone" in reason and "b: refused: queue full" in reason


def test_all_refuse_fails_with_reasons() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender()]))
    cn.step(0.1, BidsReceived("a", [Bid.refusal(k, "no plugin 'dask'")]))
    cn.step(0.1, BidsReceived("b", [Bid.refusal(k, "needs 4 cpus, has 2")]))
    fx = cn.step(0.1, BidsReceived("c", [Bid.refusal(k, "label role=hpc not matched")]))
    assert fx.messages == [] and len(fx.failed) == 1 and fx.cancel_timers == [1]
    reason = fx.failed[0].reason
    assert "no agent bid" in reason
    for text in ("no plugin 'dask'", "needs 4 cpus, has 2", "label role=hpc not matched"):
        assert text in reason


def test_no_candidates_fails_immediately() -> None:
    cn = net()
    t = tender(cands=(), excluded={"a": "no plugin 'shell'"})
    fx = cn.step(0.0, Announce([t]))
    assert fx.messages == [] and fx.timers == []
    assert len(fx.failed) == 1
    assert "no agent offers plugin 'shell'" in fx.failed[0].reason
    assert "a: no plugin 'shell'" in fx.failed[0].reason


def test_agent_down_while_bidding_and_while_awarded() -> None:
    cn = net()
    k0, k1 = key(0), key(1)
    cn.step(0.0, Announce([tender(0), tender(1)]))
    for name, est in (("a", 1.0), ("b", 2.0)):
        cn.step(0.1, BidsReceived(name, [bid(k0, est), bid(k1, est)]))
    # c goes down while it still owes bids: both negotiations conclude, a wins
    fx = cn.step(0.2, AgentDown("c"))
    assert [(m.to, len(m.tenders)) for m in fx.awards] == [("a", 2)]
    cn.step(0.3, AwardDecisions("a", [Decision(k0, True)]))
    # a goes down while holding the award for k1: b is tried next
    fx = cn.step(0.4, AgentDown("a"))
    assert [(m.to, m.keys) for m in fx.awards] == [("b", (k1,))]
    fx = cn.step(0.5, AwardDecisions("b", [Decision(k1, True)]))
    assert fx.events == [Placed(k1, "b", 2.0)]


def test_everyone_down_fails() -> None:
    cn = net()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, AgentDown("a"))
    fx = cn.step(0.1, AgentDown("b"))
    assert len(fx.failed) == 1 and "a: agent down" in fx.failed[0].reason


def test_award_deadline_tries_next_and_late_accept_is_reported() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    fx = cn.step(0.1, BidsReceived("b", [bid(k, 2.0)]))
    fx = cn.step(5.1, Deadline(fx.timers[0].timer_id))
    assert [m.to for m in fx.awards] == ["b"]
    fx = cn.step(5.2, AwardDecisions("a", [Decision(k, True)]))
    assert fx.events == [LateAcceptance(k, "a")] and cn.stats["late_decisions"] == 1
    fx = cn.step(5.3, AwardDecisions("b", [Decision(k, True)]))
    assert fx.placed == [Placed(k, "b", 2.0)]


def test_late_messages_are_ignored() -> None:
    cn = net()
    k = key()
    fx = cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    tid = fx.timers[0].timer_id
    cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    cn.step(0.1, BidsReceived("b", [bid(k, 2.0)]))
    cn.step(0.2, AwardDecisions("a", [Decision(k, True)]))
    assert not cn.is_active(k)
    for late in (
        BidsReceived("b", [bid(k, 0.5)]),
        AwardDecisions("a", [Decision(k, True)]),  # duplicate accept: not a stray
        AwardDecisions("b", [Decision(k, False)]),
        Deadline(tid),
        BidsReceived("zz", [bid(key(99), 1.0)]),
        Announce([tender()]),
    ):
        fx = cn.step(1.0, late)
        assert fx == Effects()
    assert cn.stats["late_bids"] == 2
    assert cn.stats["late_decisions"] == 2
    assert cn.stats["stale_timers"] == 1
    assert cn.stats["duplicate_announces"] == 1


def test_bid_from_non_candidate_and_duplicates_ignored() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [bid(k, 5.0)]))
    cn.step(0.1, BidsReceived("a", [bid(k, 0.1)]))  # duplicate
    cn.step(0.1, BidsReceived("x", [bid(k, 0.1)]))  # never asked
    fx = cn.step(0.1, BidsReceived("b", [bid(k, 6.0)]))
    assert fx.awards[0].to == "a" and cn.stats["late_bids"] == 2


def test_invalid_estimates_count_as_refusals() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender(cands=("a", "b"))]))
    cn.step(0.1, BidsReceived("a", [bid(k, float("nan"))]))
    fx = cn.step(0.1, BidsReceived("b", [bid(k, -1.0)]))
    assert len(fx.failed) == 1 and "invalid estimate" in fx.failed[0].reason


def test_withdraw() -> None:
    cn = net()
    k = key()
    cn.step(0.0, Announce([tender(cands=("a",))]))
    fx = cn.step(0.1, BidsReceived("a", [bid(k, 1.0)]))
    award_timer = fx.timers[0].timer_id
    fx = cn.step(0.2, Withdraw([k]))
    assert fx.events == [Withdrawn(k, "a")] and fx.cancel_timers == [award_timer]
    assert not cn.is_active(k)


def test_step_many_merges_messages() -> None:
    cn = net()
    fx = cn.step_many(0.0, [Announce([tender(0)]), Announce([tender(1)])])
    assert len(fx.cfps) == 3 and len(fx.timers) == 1


# --------------------------------------------------------------------------- property

AGENTS = ("a", "b", "c", "d")

# (kind, index, agent, value): "answer"/"decide" respond to an outstanding CFP/award
# picked by index; "rebid"/"reaccept" make an agent that refused (rejected) change its
# mind; "bid"/"refuse"/"accept"/"reject" are unsolicited noise.
action = hs.one_of(
    hs.tuples(hs.just("answer"), hs.integers(0, 50), hs.sampled_from(AGENTS), hs.floats(-1, 10)),
    hs.tuples(hs.just("decide"), hs.integers(0, 50), hs.sampled_from(AGENTS), hs.floats(0, 1)),
    hs.tuples(hs.just("bid"), hs.integers(0, 4), hs.sampled_from(AGENTS), hs.floats(0, 10)),
    hs.tuples(hs.just("refuse"), hs.integers(0, 4), hs.sampled_from(AGENTS), hs.just(0.0)),
    hs.tuples(hs.just("accept"), hs.integers(0, 4), hs.sampled_from(AGENTS), hs.just(0.0)),
    hs.tuples(hs.just("reject"), hs.integers(0, 4), hs.sampled_from(AGENTS), hs.just(0.0)),
    hs.tuples(hs.just("down"), hs.just(0), hs.sampled_from(AGENTS), hs.just(0.0)),
    hs.tuples(hs.just("timer"), hs.integers(0, 50), hs.just("a"), hs.just(0.0)),
    hs.tuples(hs.just("rebid"), hs.integers(0, 50), hs.just("a"), hs.floats(0, 10)),
    hs.tuples(hs.just("reaccept"), hs.integers(0, 50), hs.just("a"), hs.just(0.0)),
)


@settings(max_examples=200, deadline=None)
@given(
    cands=hs.lists(
        hs.lists(hs.sampled_from(AGENTS), max_size=4, unique=True), min_size=5, max_size=5
    ),
    actions=hs.lists(action, max_size=100),
    seed=hs.integers(0, 1000),
)
def test_every_negotiation_ends_exactly_once(
    cands: list[list[str]], actions: list[tuple[str, int, str, float]], seed: int
) -> None:
    cn = ContractNet(ContractNetConfig(max_rounds=2), rng=random.Random(seed))
    keys = [key(i) for i in range(5)]
    ended: dict[TenderKey, list[Placed | Failed | Deferred]] = {k: [] for k in keys}
    refused: dict[TenderKey, set[str]] = {k: set() for k in keys}
    timers: list[int] = []
    cfps: list[tuple[str, TenderKey]] = []
    awards: list[tuple[str, TenderKey]] = []
    refusals: list[tuple[str, TenderKey]] = []
    rejections: list[tuple[str, TenderKey]] = []
    now = 0.0

    def apply(fx: Effects) -> None:
        timers.extend(t.timer_id for t in fx.timers)
        for award in fx.awards:
            for k in award.keys:
                assert award.to not in refused[k], "award to an agent that refused"
                awards.append((award.to, k))
        for cfp in fx.cfps:
            for t in cfp.tenders:
                assert cfp.to not in refused[t.key], "new CFP to an agent that refused"
                cfps.append((cfp.to, t.key))
        for ev in fx.events:
            if isinstance(ev, Placed | Failed | Deferred):
                ended[ev.key].append(ev)

    def refuse(agent: str, k: TenderKey) -> None:
        ignored_before = cn.stats["late_bids"]
        fx = cn.step(now, BidsReceived(agent, [Bid.refusal(k, "no")]))
        if cn.stats["late_bids"] == ignored_before:  # the refusal was taken
            refused[k].add(agent)
            refusals.append((agent, k))
        apply(fx)

    tenders = [tender(i, tuple(c)) for i, c in enumerate(cands)]
    apply(cn.step(now, Announce(tenders)))
    for kind, i, agent, value in actions:
        now += 0.01
        k = keys[i % 5]
        if kind == "answer" and cfps:
            to, k = cfps.pop(i % len(cfps))
            if value < 0:
                refuse(to, k)
            else:
                apply(cn.step(now, BidsReceived(to, [bid(k, round(value))])))
        elif kind == "decide" and awards:
            to, k = awards.pop(i % len(awards))
            if value <= 0.4:
                rejections.append((to, k))
            apply(cn.step(now, AwardDecisions(to, [Decision(k, value > 0.4)])))
        elif kind == "rebid" and refusals:
            to, k = refusals[i % len(refusals)]
            apply(cn.step(now, BidsReceived(to, [bid(k, value)])))
        elif kind == "reaccept" and rejections:
            to, k = rejections[i % len(rejections)]
            apply(cn.step(now, AwardDecisions(to, [Decision(k, True)])))
        elif kind == "bid":
            apply(cn.step(now, BidsReceived(agent, [bid(k, value)])))
        elif kind == "refuse":
            refuse(agent, k)
        elif kind in ("accept", "reject"):
            apply(cn.step(now, AwardDecisions(agent, [Decision(k, kind == "accept")])))
        elif kind == "down":
            apply(cn.step(now, AgentDown(agent)))
        elif kind == "timer" and timers:
            apply(cn.step(now, Deadline(timers[i % len(timers)])))
    # drain: fire every remaining timer until nothing is pending
    for _ in range(20):
        if not cn.active():
            break
        pending = list(timers)
        timers.clear()
        for tid in pending:
            now += 10
            apply(cn.step(now, Deadline(tid)))
    assert cn.active() == []
    for k in keys:
        assert len(ended[k]) == 1, (k, ended[k])
        ev = ended[k][0]
        if isinstance(ev, Placed):
            assert ev.agent not in refused[k]
            assert ev.agent in cands[keys.index(k)]
