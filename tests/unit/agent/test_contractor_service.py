"""The contractor's measured service interval (pure bookkeeping in its machine)."""

from __future__ import annotations

import pytest

from tests.unit.control.contractor_harness import Harness, jk
from zambeze_mesh.agent import contractor as contractor_mod
from zambeze_mesh.control.jobs import Finished, Persist, Start, Started


class Learner:
    """One slot; each ``finish`` ends the running job after ``gap`` seconds."""

    def __init__(self) -> None:
        self.h = Harness(slots=1)
        self.n = 0

    def _new(self) -> None:
        self.n += 1
        fx = self.h.award(jk(f"a{self.n}"), plugin="python")
        assert fx.of(Persist)

    def finish(self, gap: float, elapsed: float, saturated: bool) -> None:
        m = self.h.m
        if m.running == 0:
            self._new()
        if saturated and m.queued == 0:
            self._new()  # work waits while this one completes
        assert (m.queued > 0) == saturated
        (key,) = [k for k, j in m.jobs.items() if j.running]
        self.h.step(Started(key, "python"))
        self.h.now += gap
        fx = self.h.step(Finished(key, "SUCCEEDED", elapsed=elapsed))
        assert len(fx.of(Start)) == (1 if saturated else 0)

    def interval(self) -> float:
        return self.h.m.service_interval("python", self.h.now)


def test_gaps_between_saturated_completions_are_learned() -> None:
    c = Learner()
    c.finish(0.0, 0.002, saturated=True)
    assert c.interval() == 0.0  # one completion: no gap yet
    for _ in range(20):
        c.finish(0.010, 0.002, saturated=True)
    assert c.interval() == pytest.approx(0.010)
    assert c.h.m.runtime("python") == pytest.approx(0.002)
    assert c.h.m.expected_runtime("python", c.h.now) == pytest.approx(0.010)


def test_idle_gaps_and_outliers_are_not_samples() -> None:
    c = Learner()
    c.finish(0.0, 0.002, saturated=False)  # nothing was waiting
    c.finish(5.0, 0.002, saturated=True)  # so this 5 s gap is idle time
    assert c.interval() == 0.0
    c.finish(0.010, 0.002, saturated=True)
    assert c.interval() == pytest.approx(0.010)
    c.finish(2.0, 1.5, saturated=True)  # a worker start: 750x the usual run
    assert c.interval() == pytest.approx(0.010)


def test_a_stale_interval_is_forgotten() -> None:
    c = Learner()
    c.finish(0.0, 0.002, saturated=True)
    c.finish(0.010, 0.002, saturated=True)
    assert c.interval() > 0
    c.h.now += contractor_mod.SERVICE_MEMORY_S + 1
    assert c.interval() == 0.0
