"""Lifeguard local health under CPU load: a stalled agent blames itself, not its peers.

A stall of the agent's own event loop (CPU load, a blocking call) makes its timers
fire late, in a bunch, before the replies that arrived meanwhile are processed. The
machine must read a probe round that closes far past its due time as a sign of its
own ill health (score up) and give the probe a fresh timeout, not suspect the peer.
"""

from __future__ import annotations

import random

from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.messages import Ack, Ping, SyncRequest, Update
from zambeze_mesh.membership.sim import Simulation
from zambeze_mesh.membership.steps import Received, Start, TimerFired
from zambeze_mesh.membership.swim import Swim

CFG = Config.local()


def _pair() -> tuple[Swim, float]:
    swim = Swim("a", "addr-a", CFG, random.Random(1), lambda inc: inc)
    swim.step(0.0, Start())
    peers = (Update("alive", "b", 0, "addr-b"), Update("alive", "c", 0, "addr-c"))
    swim.step(0.0, Received("addr-b", SyncRequest("b", peers)))
    return swim, 1.0


def _probe(swim: Swim, now: float) -> Ping:
    fx = swim.step(now, TimerFired("probe"))
    pings = [s.msg for s in fx.sends if isinstance(s.msg, Ping)]
    assert len(pings) == 1
    return pings[0]


def test_a_stall_past_the_round_is_not_blamed_on_the_target() -> None:
    swim, now = _pair()
    first = _probe(swim, now)  # a healthy round: answered at once
    swim.step(now + 0.01, Received(f"addr-{first.target}", Ack(first.seq, first.target)))
    now += CFG.probe_interval
    ping = _probe(swim, now)  # due to close at now + probe_interval
    # The loop stalls for 2 s: the probe timeout and the round's end fire late, together,
    # and only then is the peer's ack (which arrived during the stall) processed.
    late = now + CFG.probe_interval + 2.0
    swim.step(late, TimerFired(("ptimeout", ping.seq)))
    fx = swim.step(late, TimerFired("probe"))
    assert not [s for s in fx.sends if isinstance(s.msg, Ping)]  # the round was extended
    swim.step(late + 0.001, Received(f"addr-{ping.target}", Ack(ping.seq, ping.target)))
    assert swim.member(ping.target).status == "alive"  # type: ignore[union-attr]
    assert swim.count("suspect") == 0
    # our health took the blame (+1 for the stall, -1 for the ack that then came)
    assert swim.awareness.score == 0
    next_ping = _probe(swim, late + CFG.probe_timeout)  # the extended round closes normally
    assert next_ping.seq > ping.seq and swim.count("suspect") == 0


def test_a_stalled_round_without_any_ack_still_suspects_after_the_grace() -> None:
    swim, now = _pair()
    first = _probe(swim, now)
    swim.step(now + 0.01, Received(f"addr-{first.target}", Ack(first.seq, first.target)))
    now += CFG.probe_interval
    ping = _probe(swim, now)
    late = now + CFG.probe_interval + 2.0
    swim.step(late, TimerFired("probe"))  # stall: extended once, score up
    assert swim.awareness.score == 1 and swim.count("suspect") == 0
    # no ack within the fresh (scaled) timeout: the target really is silent
    swim.step(late + swim.awareness.scale(CFG.probe_timeout), TimerFired("probe"))
    assert swim.member(ping.target).status == "suspect"  # type: ignore[union-attr]


def test_an_on_time_unanswered_round_suspects_at_once() -> None:
    swim, now = _pair()
    first = _probe(swim, now)
    swim.step(now + 0.01, Received(f"addr-{first.target}", Ack(first.seq, first.target)))
    now += CFG.probe_interval
    ping = _probe(swim, now)
    swim.step(now + CFG.probe_interval + 0.01, TimerFired("probe"))  # not a stall
    assert swim.member(ping.target).status == "suspect"  # type: ignore[union-attr]


def test_mesh_with_a_periodically_stalled_member_accuses_nobody_falsely() -> None:
    """Five agents; one stalls for 1.5 s every 3 s (as when starved of CPU). Its peers
    suspect it (it really is silent) and it refutes, but it never suspects a healthy
    peer, and nobody is declared dead."""
    sim = Simulation(5, CFG, seed=3)
    sim.start()
    assert sim.run_until(30.0, sim.converged)
    slow = sim.nodes[2]
    incs = {n.name: n.swim.incarnation for n in sim.nodes}
    stalled_at = sim.now
    for _ in range(10):
        sim.stall(2, 1.5)
        sim.run_until(sim.now + 3.0)
    assert sim.stats.events["dead"] == 0
    for n in sim.nodes:
        if n is not slow:
            assert n.swim.incarnation == incs[n.name], n.name  # never accused
    assert slow.swim.incarnation > incs[slow.name]  # it was suspected and refuted
    assert sim.now - stalled_at >= 30.0
