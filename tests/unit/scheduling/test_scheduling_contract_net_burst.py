"""A burst of tenders spreads over the bidders by their marginal cost.

Contractors bid on every tender of a call as if it were the only one; the monitor
adds ``marginal_s`` to an agent's bids for each award it made to that agent after
the bid, so one call of many tenders is shared (greedy earliest-completion), not
all won by the agent with the lowest estimate.
"""

from __future__ import annotations

import random
from collections import Counter

from zambeze_mesh.scheduling.bidding import MIN_MARGINAL_RUNTIME_S, Bid, TenderKey, estimate_bid
from zambeze_mesh.scheduling.contract_net import (
    Announce,
    AwardDecisions,
    BidsReceived,
    ContractNet,
    ContractNetConfig,
    Decision,
    Tender,
)
from zambeze_mesh.scheduling.model import ActivityDef


def key(i: int) -> TenderKey:
    return TenderKey("camp", f"act{i}", 1)


def burst(bids: dict[str, tuple[float, float]], n: int, seed: int = 1) -> Counter[str]:
    """Announce n tenders to the agents of ``bids`` (estimate, marginal); who wins what."""
    cn = ContractNet(ContractNetConfig(), rng=random.Random(seed))
    act = ActivityDef(name="x", kind="shell")
    cn.step(0.0, Announce([Tender(key(i), act, tuple(bids)) for i in range(n)]))
    fx = None
    for agent, (est, marginal) in bids.items():
        answer = [Bid(key(i), estimate_s=est, marginal_s=marginal) for i in range(n)]
        fx = cn.step(0.1, BidsReceived(agent, answer))
    assert fx is not None
    won: Counter[str] = Counter()
    for msg in fx.awards:
        won[msg.to] += len(msg.tenders)
        cn.step(0.2, AwardDecisions(msg.to, [Decision(k, True) for k in msg.keys]))
    assert sum(won.values()) == n
    return won


def test_identical_agents_share_a_burst_evenly() -> None:
    won = burst({"a": (0.0, 0.001), "b": (0.0, 0.001), "c": (0.0, 0.001)}, 300)
    assert won == Counter({"a": 100, "b": 100, "c": 100})


def test_a_faster_agent_gets_a_proportional_share() -> None:
    won = burst({"fast": (0.0, 0.001), "slow": (0.0, 0.003)}, 400)
    assert 290 <= won["fast"] <= 310 and 90 <= won["slow"] <= 110


def test_a_queue_already_waiting_is_taken_into_account() -> None:
    # b already has 50 ms of work queued: a takes the first 50 before b gets any.
    won = burst({"a": (0.0, 0.001), "b": (0.05, 0.001)}, 60)
    assert won["a"] >= 50 and won["b"] <= 10


def test_without_marginal_cost_the_lowest_bid_wins_everything() -> None:
    # Bids from an older contractor (no marginal_s): the old behaviour.
    won = burst({"a": (0.001, 0.0), "b": (0.002, 0.0)}, 50)
    assert won == Counter({"a": 50})


def test_single_tenders_keep_random_ties() -> None:
    winners = {
        next(iter(burst({"a": (0.0, 0.001), "b": (0.0, 0.001), "c": (0.0, 0.001)}, 1, seed=s)))
        for s in range(30)
    }
    assert winners == {"a", "b", "c"}


def test_estimate_bid_marginal_cost_is_run_time_per_slot_with_a_floor() -> None:
    act = ActivityDef(name="x", kind="shell")
    assert estimate_bid(act, slots=4, avg_runtime_s=2.0).marginal_s == 0.5
    assert estimate_bid(act, slots=2, avg_runtime_s=0.0).marginal_s == MIN_MARGINAL_RUNTIME_S / 2


def test_a_measured_service_interval_raises_the_marginal_cost_and_queue_wait() -> None:
    act = ActivityDef(name="x", kind="shell")
    quiet = estimate_bid(act, slots=2, avg_runtime_s=0.002, queue_len=4, free_slots=0)
    busy = estimate_bid(
        act, slots=2, avg_runtime_s=0.002, queue_len=4, free_slots=0, service_interval_s=0.01
    )
    assert quiet.marginal_s == 0.001 and busy.marginal_s == 0.01
    assert quiet.queue_wait_s == 5 * 0.001 and busy.queue_wait_s == 5 * 0.01
    # A service interval below run time per slot changes nothing.
    low = estimate_bid(act, slots=2, avg_runtime_s=0.002, service_interval_s=0.0001)
    assert low.marginal_s == 0.001
    # ...and the monitor then gives a loaded agent a smaller share of a burst.
    won = burst({"loaded": (0.0, busy.marginal_s), "idle": (0.0, quiet.marginal_s)}, 220)
    assert won["idle"] >= 190
