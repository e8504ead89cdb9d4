"""No live agent is ever declared dead under 5% message loss."""

from __future__ import annotations

from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.sim import Simulation


def test_five_percent_loss_ten_minutes_no_false_dead() -> None:
    sim = Simulation(100, Config.lan(), seed=7, loss=0.05, delay=(0.001, 0.01))
    sim.start()
    assert sim.run_until(60.0, sim.converged)
    sim.reset_stats()
    sim.run_until(sim.now + 600.0)
    raised = len(sim.stats.suspected)
    refuted = {name for name, _inc in sim.stats.suspected}
    print(
        f"N=100, 5% loss, 600 s: {raised} distinct suspicions raised "
        f"({sim.stats.events['suspect']} suspect events), all refuted: members alive again "
        f"= {sorted(refuted) == sorted(n for n in refuted if sim.everyone_sees(n, 'alive'))}, "
        f"false deads={sim.stats.false_dead}"
    )
    assert all(sim.everyone_sees(name, "alive") for name in refuted)
    assert sim.stats.false_dead == 0
    assert sim.stats.events["dead"] == 0
    assert sim.converged()
