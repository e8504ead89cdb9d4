"""Leave, restart, partitions, the accept hook, Lifeguard awareness and suspicion."""

from __future__ import annotations

import random

import pytest

from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.messages import Ack, Ping, SyncRequest, Update
from zambeze_mesh.membership.sim import Simulation
from zambeze_mesh.membership.steps import Received, Start, TimerFired
from zambeze_mesh.membership.suspicion import Suspicion, remaining_suspicion_time
from zambeze_mesh.membership.swim import Swim

CFG = Config.local()


def _formed(n: int, seed: int = 1, **kw: object) -> Simulation:
    sim = Simulation(n, CFG, seed=seed, **kw)  # type: ignore[arg-type]
    sim.start()
    assert sim.run_until(30.0, sim.converged)
    return sim


def test_leave_marks_left_not_dead_and_stops_probing() -> None:
    sim = _formed(20)
    sim.leave(5)
    name = sim.nodes[5].name
    assert sim.run_until(sim.now + 10.0, lambda: sim.everyone_sees(name, "left"))
    pings_before = sim.stats.by_type["Ping"]
    sim.kill(5)  # the process exits after leaving
    sim.run_until(sim.now + 20.0)
    assert sim.everyone_sees(name, "left")
    assert sim.stats.events["dead"] == 0
    assert sim.stats.by_type["Ping"] > pings_before  # others still probe each other
    for i in sim.live():
        assert sim.nodes[i].swim.count("alive") == 19


def test_restart_with_same_name_comes_back_alive_with_higher_incarnation() -> None:
    sim = _formed(20)
    name = sim.nodes[7].name
    sim.kill(7)
    assert sim.run_until(sim.now + 30.0, lambda: sim.everyone_sees(name, "dead"))
    dead_inc = sim.nodes[0].swim.member(name).incarnation  # type: ignore[union-attr]
    sim.restart(7)  # incarnation 0 again
    assert sim.run_until(sim.now + 30.0, lambda: sim.everyone_sees(name, "alive"))
    assert sim.nodes[7].swim.incarnation > dead_inc
    for i in sim.live():
        m = sim.nodes[i].swim.member(name)
        assert m is not None and m.incarnation == sim.nodes[7].swim.incarnation


def test_restart_with_persisted_incarnation() -> None:
    sim = _formed(10)
    name = sim.nodes[3].name
    sim.kill(3)
    sim.restart(3, incarnation=50)
    assert sim.run_until(
        sim.now + 20.0,
        lambda: all(
            sim.nodes[i].swim.member(name).incarnation >= 50  # type: ignore[union-attr]
            for i in sim.live()
        ),
    )
    assert sim.everyone_sees(name, "alive")


def test_partition_then_heal_without_operator_action() -> None:
    sim = _formed(20)
    a, b = list(range(10)), list(range(10, 20))
    sim.partition([a, b])

    def split() -> bool:
        for i in a:
            if not all(sim.nodes[i].swim.member(f"n{j}").status == "dead" for j in b):  # type: ignore[union-attr]
                return False
        for j in b:
            if not all(sim.nodes[j].swim.member(f"n{i}").status == "dead" for i in a):  # type: ignore[union-attr]
                return False
        return True

    assert sim.run_until(sim.now + 60.0, split)
    sim.heal()
    assert sim.run_until(sim.now + 120.0, sim.converged)
    print(f"partition healed; all alive again at t={sim.now:.1f} s")


def test_accept_hook_drops_rejected_updates() -> None:
    def accept(u: Update) -> bool:
        return u.name != "n4" or u.incarnation == 0

    sim = _formed(8, accept=accept)
    sim.update_local(4)  # n4 bumps to incarnation 1 with a new record; everyone rejects it
    sim.run_until(sim.now + 10.0)
    assert sim.nodes[4].swim.incarnation >= 1
    for i in sim.live():
        if i != 4:
            m = sim.nodes[i].swim.member("n4")
            assert m is not None and m.incarnation == 0 and m.record == ("n4", 0)


def test_accept_hook_unit_and_record_only_changes_with_higher_incarnation() -> None:
    swim = Swim(
        "a",
        "addr-a",
        CFG,
        random.Random(1),
        lambda inc: ("a", inc),
        accept=lambda u: u.record != "forged",
    )
    swim.step(0.0, Start())
    good = Update("alive", "b", 1, "addr-b", "rec-b1")
    swim.step(0.1, Received("addr-b", SyncRequest("b", (good,))))
    assert swim.member("b").record == "rec-b1"  # type: ignore[union-attr]
    forged = Update("alive", "b", 2, "evil", "forged")
    swim.step(0.2, Received("addr-x", SyncRequest("x", (forged,))))
    same_inc = Update("alive", "b", 1, "evil", "rec-other")
    swim.step(0.3, Received("addr-x", SyncRequest("x", (same_inc,))))
    m = swim.member("b")
    assert m is not None and (m.address, m.record, m.incarnation) == ("addr-b", "rec-b1", 1)


def _probe_target(swim: Swim, now: float) -> tuple[Ping, float]:
    fx = swim.step(now, TimerFired("probe"))
    pings = [s.msg for s in fx.sends if isinstance(s.msg, Ping)]
    assert len(pings) == 1
    return pings[0], now


def test_lhm_rises_on_failed_probes_and_decays_on_success() -> None:
    swim = Swim("a", "addr-a", CFG, random.Random(1), lambda inc: inc)
    swim.step(0.0, Start())
    swim.step(0.0, Received("addr-b", SyncRequest("b", (Update("alive", "b", 0, "addr-b"),))))
    now = 1.0
    for _ in range(3):  # probes of b go unanswered; nobody to nack for us
        ping, _ = _probe_target(swim, now)
        now += swim.awareness.scale(CFG.probe_interval) + 0.01
    _probe_target(swim, now)  # closes the third failed round
    assert swim.awareness.score == 3
    long_interval = swim.awareness.scale(CFG.probe_interval)
    assert long_interval == pytest.approx(4 * CFG.probe_interval)
    # b refuted (new incarnation): acks now arrive and the score decays again
    swim.step(now, Received("addr-b", SyncRequest("b", (Update("alive", "b", 9, "addr-b"),))))
    scores = []
    for _ in range(5):  # (the first round also closes the pending unanswered probe: +1)
        now += swim.awareness.scale(CFG.probe_interval) + 0.01
        ping, _ = _probe_target(swim, now)
        swim.step(now + 0.01, Received("addr-b", Ack(ping.seq, "b")))
        scores.append(swim.awareness.score)
    assert scores == [3, 2, 1, 0, 0]


def test_suspicion_timeout_shrinks_with_confirmations() -> None:
    lo, hi, k = 1.0, 6.0, 3
    assert remaining_suspicion_time(0, k, 0.0, lo, hi) == pytest.approx(hi)
    assert remaining_suspicion_time(k, k, 0.0, lo, hi) == pytest.approx(lo)
    s = Suspicion(0.0, "x", 0, k, lo, hi)
    deadlines = [s.deadline]
    for who in ("y", "z", "w"):
        assert s.confirm(who, 0.5)
        deadlines.append(s.deadline)
    assert deadlines == sorted(deadlines, reverse=True) and deadlines[-1] == pytest.approx(lo)
    assert not s.confirm("y", 0.6) and not s.confirm("v", 0.6)  # duplicates / beyond k

    # through the machine: suspicions about c from distinct members shorten its deadline
    swim = Swim("a", "addr-a", CFG, random.Random(1), lambda inc: inc)
    swim.step(0.0, Start())
    peers = tuple(Update("alive", f"p{i}", 0, f"addr-p{i}") for i in range(10))
    swim.step(0.0, Received("addr-p0", SyncRequest("p0", peers)))
    swim.step(1.0, Received("addr-p1", Ack(999, "p1", (Update("suspect", "p5", 0, source="p1"),))))
    first = swim.suspicion_deadline("p5")
    swim.step(1.1, Received("addr-p2", Ack(999, "p2", (Update("suspect", "p5", 0, source="p2"),))))
    second = swim.suspicion_deadline("p5")
    assert first is not None and second is not None and second < first
    assert swim.member("p5").status == "suspect"  # type: ignore[union-attr]


def test_absurd_incarnation_accusation_is_ignored() -> None:
    """A suspect/dead update naming us with a huge incarnation must not be refuted;
    any accusation is refuted one above our own incarnation, not the accuser's."""
    import random

    from zambeze_mesh.membership.config import Config
    from zambeze_mesh.membership.messages import DEAD, SUSPECT, Gossip, Update
    from zambeze_mesh.membership.rules import MAX_INCARNATION
    from zambeze_mesh.membership.steps import Received, Start
    from zambeze_mesh.membership.swim import Swim

    swim = Swim("me", "me:1", Config.local(), random.Random(1), lambda inc: ("rec", inc))
    swim.step(0.0, Start([]))
    for kind in (SUSPECT, DEAD):
        bad = Update(kind, "me", 2**64 - 1, source="evil")
        swim.step(1.0, Received("evil:1", Gossip("evil", (bad,))))
    assert swim.incarnation == 0
    ok = Update(SUSPECT, "me", 5, source="peer")
    swim.step(2.0, Received("peer:1", Gossip("peer", (ok,))))
    assert swim.incarnation == 1 < MAX_INCARNATION
