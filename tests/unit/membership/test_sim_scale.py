"""Convergence and failure detection at scale on the virtual clock."""

from __future__ import annotations

import math

from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.sim import Simulation


def _form(n: int, seed: int) -> tuple[Simulation, float]:
    sim = Simulation(n, Config.lan(), seed=seed)
    sim.start()
    assert sim.run_until(120.0, sim.converged), f"N={n} did not converge"
    return sim, sim.now


def test_convergence_rounds_grow_logarithmically_and_kill_is_detected() -> None:
    cfg = Config.lan()
    rounds: dict[int, int] = {}
    sims: dict[int, Simulation] = {}
    for n in (10, 100, 1000):
        sim, t = _form(n, seed=n)
        rounds[n] = max(1, math.ceil(t / cfg.probe_interval))
        sims[n] = sim
        print(f"N={n}: converged in {t:.2f} s = {rounds[n]} probe rounds")
    assert rounds[1000] < 4 * rounds[10]

    sim = sims[1000]
    for i in sim.live():  # every agent sees every other alive
        assert sim.nodes[i].swim.count("alive") == 1000
    victim = 500
    sim.kill(victim)
    start = sim.now
    name = sim.nodes[victim].name
    assert sim.run_until(start + 120.0, lambda: sim.everyone_sees(name, "dead"))
    print(f"N=1000: kill detected as dead by all in {sim.now - start:.2f} s")
    assert sim.stats.false_dead == 0
