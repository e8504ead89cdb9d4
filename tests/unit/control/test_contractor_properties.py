"""Properties of ContractorMachine over random input sequences (Hypothesis).

A model of the shell runs alongside the machine: it writes (or fails to write)
contracts, starts and finishes runs, and checks after every step that slots are
never over-committed, two attempts of one activity never run at once, each job's
final event is emitted exactly once, a succeeded attempt never runs again, a cancel
reaches every running attempt, and a hand-back releases its slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs

from zambeze_mesh.control.contractor import ContractorMachine
from zambeze_mesh.control.jobs import (
    Awarded,
    AwardItem,
    CancelRequested,
    Close,
    ContractorConfig,
    Effects,
    Emit,
    Finished,
    HandBack,
    Input,
    JobKey,
    JobState,
    Kill,
    MarkHandedBack,
    Persist,
    Persisted,
    PersistFailed,
    Progress,
    Start,
    Started,
    Tick,
)
from zambeze_mesh.scheduling import TenderKey

MONITORS = ("m", "n")
ACTIVITIES = ("a", "b", "c")


def key(monitor: int, activity: int, attempt: int) -> JobKey:
    return (MONITORS[monitor], TenderKey("cmp", ACTIVITIES[activity], attempt))


_keys = hs.builds(key, hs.integers(0, 1), hs.integers(0, 2), hs.integers(1, 2))
_ops = hs.one_of(
    hs.tuples(hs.just("award"), hs.lists(_keys, min_size=1, max_size=3)),
    hs.tuples(hs.just("persist"), hs.booleans()),
    hs.tuples(hs.just("started"), hs.integers(0, 7)),
    hs.tuples(hs.just("progress"), hs.integers(0, 7)),
    hs.tuples(hs.just("finish"), hs.integers(0, 7), hs.sampled_from(["SUCCEEDED", "FAILED"])),
    hs.tuples(hs.just("cancel"), hs.integers(0, 1), hs.integers(0, 2), hs.integers(0, 2)),
    hs.tuples(hs.just("handback"), _keys),
    hs.tuples(hs.just("mark"), hs.just(0)),
    hs.tuples(hs.just("tick"), hs.just(0)),
    hs.tuples(hs.just("close"), hs.just(0)),
)


@dataclass
class Shell:
    """What a shell would see and do; checks the properties as it goes."""

    slots: int
    m: ContractorMachine = field(init=False)
    now: float = 0.0
    unwritten: list[tuple[JobKey, ...]] = field(default_factory=list)
    live: set[JobKey] = field(default_factory=set)  # accepted, no final event yet
    running: set[JobKey] = field(default_factory=set)  # started, no final event yet
    plugin: dict[JobKey, str] = field(default_factory=dict)
    killed: set[JobKey] = field(default_factory=set)
    must_stop: set[JobKey] = field(default_factory=set)  # cancelled or handed back
    marked: set[JobKey] = field(default_factory=set)  # reports handed back at its end
    succeeded: set[JobKey] = field(default_factory=set)
    finals: int = 0

    def __post_init__(self) -> None:
        self.m = ContractorMachine(ContractorConfig(slots=self.slots, strict=True))

    def step(self, inp: Input) -> Effects:
        self.now += 1.0
        fx = self.m.step(self.now, inp)
        for e in fx.effects:
            if isinstance(e, Persist):
                self.unwritten.append(e.jobs)
                assert not self.live & set(e.jobs)
                self.live |= set(e.jobs)
            elif isinstance(e, Start):
                assert e.job in self.live and e.job not in self.running
                assert e.job not in self.succeeded, "a succeeded attempt runs again"
                self.running.add(e.job)
                assert len(self.running) <= self.slots, "slots over-committed"
                acts = [(k[1].campaign_id, k[1].activity) for k in self.running]
                assert len(acts) == len(set(acts)), "two attempts of one activity run"
            elif isinstance(e, Kill):
                assert e.job in self.running and e.plugin == self.plugin[e.job]
                self.killed.add(e.job)
            elif isinstance(e, Emit) and e.final:
                assert e.job in self.live, "a second final event (or one for no job)"
                self.live.discard(e.job)
                self.running.discard(e.job)  # its slot is free again
                self.finals += 1
                if e.job in self.must_stop | self.marked:
                    assert e.state in ("CANCELLED", "FAILED"), "a stopped job succeeded"
                    if e.job in self.marked:
                        assert e.state == "FAILED" and e.detail["handed_back"] == "1"
                    self.must_stop.discard(e.job)
                    self.marked.discard(e.job)
                if e.state == "SUCCEEDED":
                    self.succeeded.add(e.job)
            elif isinstance(e, Emit):
                assert e.job in self.running and e.job not in self.must_stop
        self.m.validate()
        assert self.m.running == len(self.running)
        return fx

    def pick(self, i: int) -> JobKey | None:
        ordered = sorted(self.running, key=repr)
        return ordered[i % len(ordered)] if ordered else None

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "award":
            keys: list[JobKey] = op[1]
            for monitor in MONITORS:
                mine = tuple(AwardItem(k[1], "p", "p") for k in keys if k[0] == monitor)
                if mine:
                    fx = self.step(Awarded(monitor, mine))
                    assert len(fx.decisions) == len(mine)
        elif kind == "persist" and self.unwritten:
            jobs = self.unwritten.pop(0)
            if op[1]:
                self.step(Persisted(jobs))
            else:
                self.step(PersistFailed(jobs))
                self.live -= set(jobs)
        elif kind == "started":
            job = self.pick(op[1])
            if job is not None and job not in self.plugin:
                self.plugin[job] = "p"
                fx = self.step(Started(job, "p"))
                if job in self.must_stop:
                    assert fx.effects == [Kill(job, "p")], "a cancel missed a staging job"
        elif kind == "progress":
            job = self.pick(op[1])
            if job is not None:
                self.step(Progress(job, "RUNNING"))
        elif kind == "finish":
            job = self.pick(op[1])
            if job is not None:
                self.step(Finished(job, op[2], elapsed=0.1))
        elif kind == "cancel":
            monitor, act, attempt = MONITORS[op[1]], ACTIVITIES[op[2]], op[3]
            hit = {
                k
                for k in self.live
                if k[0] == monitor
                and k[1].activity == act
                and (not attempt or k[1].attempt == attempt)
                and self.m.snapshot().get(k) is not JobState.ACCEPTED
            }
            running_hit = hit & self.running
            fx = self.step(CancelRequested(monitor, (("cmp", act, attempt),)))
            assert fx.matched == len(hit)
            killed = {e.job for e in fx.of(Kill)}
            for job in running_hit:  # cancel reaches every running attempt
                assert self.m.snapshot()[job] is JobState.STOPPING
                assert (job in killed) == (job in self.plugin)
            self.must_stop |= running_hit
            assert not (hit - running_hit) & self.live  # the others ended at once
        elif kind == "handback":
            back: JobKey = op[1]
            state = self.m.snapshot().get(back)
            fx = self.step(HandBack(back, "walltime"))
            ok = state in (JobState.QUEUED, JobState.HELD, JobState.RUNNING)
            assert fx.matched == (1 if ok else 0)
            if state is JobState.RUNNING:
                self.must_stop.add(back)
            if ok and state is not JobState.RUNNING:
                assert back not in self.live  # ended at once, its place freed
        elif kind == "mark":
            self.step(MarkHandedBack("pilot gone"))
            self.marked |= set(self.live)
        elif kind == "tick":
            self.step(Tick())
        elif kind == "close":
            self.step(Close())
            self.must_stop |= set(self.running)

    def drain(self) -> None:
        """Write every contract and finish every run: every job ends exactly once."""
        for _ in range(1000):
            if self.unwritten:
                self.step(Persisted(self.unwritten.pop(0)))
            elif self.running:
                job = self.pick(0)
                assert job is not None
                self.step(Finished(job, "SUCCEEDED"))
            else:
                break
        assert not self.live and not self.m.jobs, "a job never ended"
        assert self.m.running == 0 and self.m.free_slots == self.slots


@settings(max_examples=300, deadline=None)
@given(slots=hs.integers(1, 3), ops=hs.lists(_ops, max_size=60))
def test_contractor_invariants_hold_over_random_inputs(
    slots: int, ops: list[tuple[Any, ...]]
) -> None:
    shell = Shell(slots)
    for op in ops:
        shell.apply(op)
    shell.drain()


@settings(max_examples=100, deadline=None)
@given(ops=hs.lists(_keys, min_size=1, max_size=12))
def test_a_succeeded_attempt_never_runs_again_on_a_duplicate_award(ops: list[JobKey]) -> None:
    shell = Shell(2)
    for k in ops:
        shell.apply(("award", [k]))
        shell.drain()
    for k in ops:  # every one of them again, after they all succeeded
        fx = shell.step(Awarded(k[0], (AwardItem(k[1], "p", "p"),)))
        assert fx.decisions[0].accepted and fx.effects == []
