"""The contractor's measured service interval (pure bookkeeping, a stand-in agent)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from zambeze_mesh.agent import contractor as contractor_mod
from zambeze_mesh.agent.contractor import Contractor, Job
from zambeze_mesh.scheduling import ActivityDef, TenderKey


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(monkeypatch: pytest.MonkeyPatch, slots: int = 1) -> tuple[Contractor, Clock]:
    clock = Clock()
    monkeypatch.setattr(contractor_mod.time, "monotonic", clock)
    agent = SimpleNamespace(config=SimpleNamespace(slots=slots, max_queued=0))
    c = Contractor(agent, registry=None, reporter=None, stager=None)  # type: ignore[arg-type]
    return c, clock


def job(elapsed: float) -> Job:
    act = ActivityDef(name="a", kind="python", plugin="python")
    j = Job(TenderKey("c", "a", 1), "m", act, item=None)  # type: ignore[arg-type]
    j.elapsed = elapsed
    return j


def finish(c: Contractor, clock: Clock, gap: float, elapsed: float, saturated: bool) -> None:
    clock.now += gap
    c._running = c.slots if saturated else 0
    c._completed(job(elapsed))


def test_gaps_between_saturated_completions_are_learned(monkeypatch: pytest.MonkeyPatch) -> None:
    c, clock = make(monkeypatch)
    c._runtime["python"] = 0.002
    finish(c, clock, 0.0, 0.002, saturated=True)
    assert c._service_interval("python") == 0.0  # one completion: no gap yet
    for _ in range(20):
        finish(c, clock, 0.010, 0.002, saturated=True)
    assert c._service_interval("python") == pytest.approx(0.010)


def test_idle_gaps_and_outliers_are_not_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    c, clock = make(monkeypatch)
    c._runtime["python"] = 0.002
    finish(c, clock, 0.0, 0.002, saturated=False)  # nothing was waiting
    finish(c, clock, 5.0, 0.002, saturated=True)  # so this 5 s gap is idle time
    assert c._service_interval("python") == 0.0
    finish(c, clock, 0.010, 0.002, saturated=True)
    assert c._service_interval("python") == pytest.approx(0.010)
    finish(c, clock, 2.0, 1.5, saturated=True)  # a worker start: 750x the usual run
    assert c._service_interval("python") == pytest.approx(0.010)


def test_a_stale_interval_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    c, clock = make(monkeypatch)
    c._runtime["python"] = 0.002
    finish(c, clock, 0.0, 0.002, saturated=True)
    finish(c, clock, 0.010, 0.002, saturated=True)
    assert c._service_interval("python") > 0
    clock.now += contractor_mod.SERVICE_MEMORY_S + 1
    assert c._service_interval("python") == 0.0
