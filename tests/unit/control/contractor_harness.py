"""Driving a :class:`ContractorMachine` by hand in tests (no network, disk or sleeps)."""

from __future__ import annotations

from zambeze_mesh.control.contractor import ContractorMachine
from zambeze_mesh.control.jobs import (
    Awarded,
    AwardItem,
    ContractorConfig,
    Effects,
    Emit,
    Gate,
    Input,
    JobKey,
    Persist,
    Persisted,
)
from zambeze_mesh.scheduling import TenderKey


def jk(activity: str = "a", attempt: int = 1, monitor: str = "m", campaign: str = "c") -> JobKey:
    """A job key."""
    return (monitor, TenderKey(campaign, activity, attempt))


class Harness:
    """A strict machine, a clock, and every effect it returned."""

    def __init__(self, slots: int = 1, max_queued: int = 0, gate: Gate | None = None) -> None:
        self.m = ContractorMachine(
            ContractorConfig(slots=slots, max_queued=max_queued, strict=True), gate=gate
        )
        self.now = 100.0
        self.log: list[Effects] = []

    def step(self, inp: Input) -> Effects:
        fx = self.m.step(self.now, inp)
        self.m.validate()
        self.log.append(fx)
        return fx

    def award(
        self, *keys: JobKey, plugin: str = "shell", refusal: str | None = None, named: str = ""
    ) -> Effects:
        """Award ``keys`` (one monitor), then write every accepted contract; returns the
        award's answers with the effects of both steps."""
        monitors = {k[0] for k in keys}
        assert len(monitors) == 1
        items = tuple(AwardItem(k[1], plugin, plugin, named, refusal) for k in keys)
        fx = self.step(Awarded(monitors.pop(), items))
        both = Effects(list(fx.effects), fx.decisions, fx.matched)
        for p in fx.of(Persist):
            both.effects += self.step(Persisted(p.jobs)).effects
        return both

    def finals(self) -> list[Emit]:
        """Every final event emitted so far."""
        return [e for fx in self.log for e in fx.of(Emit) if e.final]
