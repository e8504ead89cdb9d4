"""Hypothesis: CampaignMachine's invariants over random DAGs and random input sequences.

Each example builds a random campaign, then feeds the machine a random sequence of
inputs (awards, deferrals, reports of any state from the right or a wrong agent,
stale attempts, lost agents, placement failures, a cancel) where some commits fail
(the step is rolled back). Then it drives what is left to the end. Invariants:
sequence numbers gap-free and monotonic; every activity ends in exactly one terminal
state and is never recorded again; dependants of a failure are skipped; a SUCCEEDED
activity is never offered or run again; a cancel reaches every placed attempt; a
rolled-back step leaves memory as it was; ``validate()`` holds after every step.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from zambeze_mesh.control.campaign import (
    CampaignMachine,
    CancelRequested,
    Deferred,
    Effects,
    Input,
    Key,
    MemberDown,
    Placed,
    PlacementFailed,
    Report,
    Reported,
    Submitted,
)
from zambeze_mesh.control.graph import Graph
from zambeze_mesh.control.records import ActivityRecord, ActivityRow, CampaignRecord, CampaignRun
from zambeze_mesh.control.states import PLACED, TERMINAL, ActivityState, CampaignState

A = ActivityState
AGENTS = ("w1", "w2", "w3")
REPORTED = (A.AWARDED, A.STAGING, A.QUEUED, A.RUNNING, A.SUCCEEDED, A.FAILED, A.CANCELLED)


@hs.composite
def campaigns(draw: hs.DrawFn) -> CampaignRun:
    n = draw(hs.integers(1, 7))
    names = [f"a{i}" for i in range(n)]
    preds = {
        name: sorted(draw(hs.sets(hs.sampled_from(names[:i]), max_size=3)) if i else [])
        for i, name in enumerate(names)
    }
    retries = {name: draw(hs.integers(0, 2)) for name in names}
    graph = Graph.of(names, preds, retries)
    return CampaignRun("c", "t", graph, {x: ActivityRow(x, A.PENDING) for x in names}, 0)


# An action picks its target among the campaign's activities when it is taken.
actions = hs.lists(
    hs.tuples(
        hs.sampled_from(["place", "defer", "report", "wrong", "stale", "down", "nofit", "cancel"]),
        hs.integers(0, 6),
        hs.sampled_from(REPORTED),
        hs.sampled_from(AGENTS),
        hs.booleans(),  # this step's commit fails
        hs.booleans(),  # handed back (for a FAILED report)
    ),
    max_size=40,
)


class World:
    """The machine plus what the shell would do, and the records it committed."""

    def __init__(self, run: CampaignRun) -> None:
        self.m = CampaignMachine(strict=True)
        self.run = run
        self.records: list[ActivityRecord | CampaignRecord] = []
        self.offered_after_success: list[str] = []
        self.step(Submitted(run, "go"), fail=False)

    def step(self, inp: Input, fail: bool) -> Effects | None:
        before = repr(self.run)
        placed_before = {
            (n, r.attempt, r.agent) for n, r in self.run.acts.items() if r.state in PLACED
        }
        fx = self.m.step(0, inp)
        if fail:  # the commit failed: memory as it was
            fx.rollback()
            assert repr(self.run) == before
            return None
        if fx.started is not None:
            self.m.runs[fx.started.id] = fx.started
        for run in fx.tx.finished:
            self.m.runs.pop(run.id, None)
        self.m.validate()
        self.records.extend(rec for _, rec in fx.tx.records)
        for _, names in fx.offer:
            self.offered_after_success += [
                n for n in names if any(r == (n, A.SUCCEEDED) for r in self.finals())
            ]
        if isinstance(inp, CancelRequested) and placed_before:
            reached = {(k.activity, k.attempt, agent) for k, agent in fx.cancel_on}
            assert placed_before <= reached, (placed_before, reached)
        return fx

    def finals(self) -> list[tuple[str, str]]:
        return [
            (r.activity, r.state)
            for r in self.records
            if isinstance(r, ActivityRecord) and r.state in TERMINAL
        ]

    def key(self, name: str) -> Key:
        return Key("c", name, self.run.acts[name].attempt)

    def act(self, action: tuple[str, int, A, str, bool, bool]) -> None:
        kind, i, state, agent, fail, handed_back = action
        names = list(self.run.acts)
        name = names[i % len(names)]
        row = self.run.acts[name]
        inp: Input
        if kind == "place":
            inp = Placed(((self.key(name), agent),))
        elif kind == "defer":
            inp = Deferred(((self.key(name), "busy"),))
        elif kind in ("report", "wrong", "stale"):
            who = row.agent or agent
            if kind == "wrong":
                who = next(a for a in AGENTS if a != row.agent)
            key = self.key(name)
            if kind == "stale":
                key = Key("c", name, max(1, row.attempt - 1))
            detail = (("handed_back", "1"),) if handed_back else ()
            rep = Report(key, state, "m", detail, b"r")
            inp = Reported(who, (rep,), frozenset({key}) if agent == who else frozenset())
        elif kind == "down":
            inp = MemberDown(agent)
        elif kind == "nofit":
            inp = PlacementFailed(self.key(name), "nobody")
        else:
            inp = CancelRequested("c")
        self.step(inp, fail)

    def finish(self) -> None:
        """Place and succeed whatever is left, until the campaign ends."""
        for _ in range(200):
            if self.run.state != CampaignState.RUNNING:
                return
            for name, row in list(self.run.acts.items()):
                if row.state in (A.BIDDING, A.READY):
                    self.step(Placed(((self.key(name), "w1"),)), fail=False)
                elif row.state in PLACED:
                    rep = Report(self.key(name), A.SUCCEEDED, "", (), b"r")
                    self.step(Reported(row.agent, (rep,)), fail=False)
        raise AssertionError(f"the campaign did not end: {self.run}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(campaigns(), actions)
def test_invariants_hold_over_random_inputs(run: CampaignRun, steps: list) -> None:  # type: ignore[type-arg]
    w = World(run)
    for action in steps:
        w.act(action)
    w.finish()

    seqs = [r.seq for r in w.records]
    assert seqs == list(range(1, len(seqs) + 1)), "seqs have a gap or go back"
    # Every activity ends in exactly one terminal state, never recorded after it.
    ended: dict[str, str] = {}
    for r in w.records:
        if isinstance(r, ActivityRecord):
            assert r.activity not in ended, f"{r.activity} recorded after {ended[r.activity]}"
            if r.state in TERMINAL:
                ended[r.activity] = r.state
    assert set(ended) == set(run.acts)
    assert {n: a.state for n, a in run.acts.items()} == ended
    # Dependants of a failure are skipped.
    for name, state in ended.items():
        if state == A.FAILED:
            for dep in run.graph.dependants(name):
                assert ended[dep] == A.SKIPPED, (name, dep, ended[dep])
    # A SUCCEEDED activity is never offered again.
    assert not w.offered_after_success
    # Exactly one final campaign record, last, consistent with the activities.
    finals = [r for r in w.records if isinstance(r, CampaignRecord)]
    assert finals[0].state == CampaignState.RUNNING
    assert len(finals) == 2 and w.records[-1] is finals[-1]
    assert finals[-1].state == run.state != CampaignState.RUNNING
    if run.state != CampaignState.CANCELLED:
        assert run.graph.final_state(run.states()) == run.state
