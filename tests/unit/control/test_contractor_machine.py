"""ContractorMachine driven directly with typed inputs; effects compared exactly."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from tests.unit.control.contractor_harness import Harness, jk
from zambeze_mesh.control import jobs as J
from zambeze_mesh.control.contractor import ContractorMachine, JobRecord
from zambeze_mesh.control.jobs import (
    ALLOWED,
    CancelRequested,
    Close,
    ContractorConfig,
    Decision,
    Emit,
    Finished,
    HandBack,
    IllegalJobTransition,
    JobState,
    Kill,
    Load,
    Lost,
    MarkHandedBack,
    Persist,
    PersistFailed,
    Progress,
    Start,
    Started,
    Tick,
)
from zambeze_mesh.scheduling import states as st

A1, A2, B1 = jk("a", 1), jk("a", 2), jk("b", 1)


def test_an_award_is_persisted_then_started() -> None:
    h = Harness(slots=1)
    fx = h.step(J.Awarded("m", (J.AwardItem(A1[1], "shell", "shell"),)))
    assert fx.decisions == [Decision(A1[1], True)]
    assert fx.effects == [Persist((A1,))]
    assert h.m.snapshot() == {A1: JobState.ACCEPTED}  # not runnable until durable
    assert h.step(J.Persisted((A1,))).effects == [Start(A1)]
    assert h.m.snapshot() == {A1: JobState.RUNNING}


def test_work_beyond_the_slots_waits_and_starts_when_one_frees() -> None:
    h = Harness(slots=1)
    assert h.award(A1, B1).of(Start) == [Start(A1)]
    assert h.m.snapshot() == {A1: JobState.RUNNING, B1: JobState.QUEUED}
    assert h.step(Tick()).effects == [Load(0)]
    h.step(Started(A1, "shell-batch"))  # the plugin that ran is named in the event
    fx = h.step(Finished(A1, "SUCCEEDED", "ok", {"exit_code": "0"}, {"inputs": "[]"}, b"r", 0.5))
    detail = {"exit_code": "0", "inputs": "[]", "plugin": "shell-batch"}
    assert fx.effects == [
        Emit(A1, "SUCCEEDED", "ok", detail, b"r", True),
        Start(B1),
    ]
    assert h.m.snapshot() == {B1: JobState.RUNNING}
    assert h.m.succeeded(A1) and h.m.runtime("shell") == 0.5


def test_a_failed_contract_write_forgets_the_job_without_an_event() -> None:
    h = Harness(slots=1)
    fx = h.step(J.Awarded("m", (J.AwardItem(A1[1], "shell", "shell"),)))
    assert h.step(PersistFailed(fx.of(Persist)[0].jobs)).effects == []
    assert h.m.snapshot() == {} and h.finals() == []
    assert h.award(A1).of(Start) == [Start(A1)]  # the monitor may award it again


def test_two_attempts_of_one_activity_never_run_at_once() -> None:
    h = Harness(slots=3)
    other = jk("a", 1, monitor="n")  # another monitor, the same plugin key
    h.award(A1)
    assert h.award(other).of(Start) == []
    assert h.award(jk("a", 2)).of(Start) == []
    assert h.award(B1).of(Start) == [Start(B1)]
    assert h.m.snapshot()[other] is JobState.HELD
    assert h.m.snapshot()[A2] is JobState.HELD
    h.step(Started(A1, "shell"))
    fx = h.step(Finished(A1, "FAILED", "boom"))
    assert fx.of(Start) == [Start(other)]  # first come, first served
    assert h.m.snapshot()[A2] is JobState.HELD  # held again behind it
    fx = h.step(Finished(other, "SUCCEEDED"))
    assert fx.of(Start) == [Start(A2)]


def test_cancel_before_start_ends_queued_and_held_jobs_at_once() -> None:
    h = Harness(slots=1)
    h.award(A1, B1, A2)  # A1 runs, B1 queued, A2 queued (held once a slot frees)
    fx = h.step(CancelRequested("m", (("c", "b", 0),)))
    assert fx.matched == 1
    assert fx.effects == [
        Emit(B1, "CANCELLED", "cancelled before it started", {"plugin": "shell"}, final=True)
    ]
    h.step(Finished(A1, "SUCCEEDED"))  # never Started: a transfer, say
    h.award(A1, jk("z")).of(Start)
    # A2 now runs (A1 succeeded and its duplicate award did not run it again)
    assert h.m.snapshot()[A2] is JobState.RUNNING
    h.award(jk("a", 3))
    assert h.m.snapshot()[jk("a", 3)] is JobState.QUEUED
    h.step(Finished(A2, "FAILED"))
    assert h.m.snapshot()[jk("z")] is JobState.RUNNING
    assert h.m.snapshot()[jk("a", 3)] is JobState.QUEUED
    assert h.step(CancelRequested("m", (("c", "a", 3),))).matched == 1
    assert h.finals()[-1].state == "CANCELLED" and h.finals()[-1].job == jk("a", 3)


def test_a_held_job_is_cancelled_at_once() -> None:
    h = Harness(slots=2)
    h.award(A1)
    h.award(A2)
    assert h.m.snapshot()[A2] is JobState.HELD
    fx = h.step(CancelRequested("m", (("c", "a", 2),)))
    assert fx.effects == [
        Emit(A2, "CANCELLED", "cancelled before it started", {"plugin": "shell"}, final=True)
    ]
    h.m.validate()


def test_cancel_kills_a_running_attempt_and_reports_it_cancelled() -> None:
    h = Harness(slots=1)
    h.award(A1)
    h.step(Started(A1, "shell"))
    fx = h.step(CancelRequested("m", (("c", "a", 0),)))
    assert (fx.matched, fx.effects) == (1, [Kill(A1, "shell")])
    assert h.m.snapshot() == {A1: JobState.STOPPING}
    again = h.step(CancelRequested("m", (("c", "a", 1),)))  # a second cancel kills again
    assert (again.matched, again.effects) == (1, [Kill(A1, "shell")])
    assert h.step(Progress(A1, "RUNNING", "still")).effects == []  # chatter is dropped
    fx = h.step(Finished(A1, "SUCCEEDED", "raced", {"exit_code": "0"}, {}, b"r", 1.0))
    assert fx.effects == [Emit(A1, "CANCELLED", "cancelled", {"plugin": "shell"}, final=True)]
    assert not h.m.succeeded(A1)
    assert h.award(A1).of(Start) == [Start(A1)]  # a new negotiation may award it again


def test_a_cancel_before_the_plugin_runs_kills_it_when_it_is_about_to() -> None:
    h = Harness(slots=1)
    h.award(A1)
    fx = h.step(CancelRequested("m", (("c", "a", 1),)))
    assert (fx.matched, fx.effects) == (1, [])  # staging: nothing to kill yet
    assert h.step(Started(A1, "python")).effects == [Kill(A1, "python")]


def test_cancel_touches_only_the_callers_jobs_and_the_attempt_named() -> None:
    h = Harness(slots=4)
    h.award(jk("a", 1, monitor="n"))
    h.award(B1)
    assert h.step(CancelRequested("m", (("c", "a", 0), ("c", "b", 2)))).matched == 0
    assert h.step(CancelRequested("m", (("x", "b", 0),))).matched == 0
    assert h.m.snapshot() == {jk("a", 1, monitor="n"): JobState.RUNNING, B1: JobState.RUNNING}


def test_a_hand_back_stops_the_attempt_and_reports_it_handed_back() -> None:
    h = Harness(slots=1)
    h.award(A1, B1)
    h.step(Started(A1, "shell"))
    fx = h.step(HandBack(A1, "walltime near"))
    assert (fx.matched, fx.effects) == (1, [Kill(A1, "shell")])
    assert h.step(HandBack(A1, "again")).matched == 0  # already being stopped
    assert h.step(HandBack(jk("nope"), "x")).matched == 0
    fx = h.step(HandBack(B1, "walltime near"))  # queued: ends at once
    handed = {"handed_back": "1", "plugin": "shell"}
    assert fx.effects == [
        Emit(B1, "FAILED", "handed back: walltime near", handed, final=True),
    ]
    fx = h.step(Finished(A1, "SUCCEEDED", elapsed=2.0))
    assert fx.effects == [Emit(A1, "FAILED", "handed back: walltime near", handed, final=True)]
    assert h.m.running == 0 and h.m.free_slots == 1  # the hand-back released its slot


def test_marked_attempts_report_handed_back_however_they_end() -> None:
    h = Harness(slots=1)
    h.award(A1, B1)
    h.step(Started(A1, "shell"))
    assert h.step(MarkHandedBack("the pilot's job was cancelled")).effects == []
    fx = h.step(Finished(A1, "SUCCEEDED"))
    assert fx.effects[0] == Emit(
        A1,
        "FAILED",
        "handed back: the pilot's job was cancelled",
        {"handed_back": "1", "plugin": "shell"},
        final=True,
    )
    assert fx.effects[1] == Start(B1)
    assert h.m.job(B1) is not None and h.m.job(B1).handed_back  # type: ignore[union-attr]
    assert h.step(HandBack(B1, "drain")).matched == 1


def test_duplicate_awards() -> None:
    h = Harness(slots=1)
    h.award(A1)
    fx = h.award(A1)
    assert fx.decisions == [Decision(A1[1], True)] and fx.effects == []  # idempotent
    h.step(Started(A1, "shell"))
    h.step(Finished(A1, "SUCCEEDED"))
    fx = h.award(A1)
    assert fx.decisions == [Decision(A1[1], True)] and fx.effects == []  # never again
    h.award(B1)
    h.step(CancelRequested("m", (("c", "b", 1),)))
    fx = h.award(B1)
    assert fx.decisions == [Decision(B1[1], False, "this attempt is being cancelled here")]


def test_refusals() -> None:
    h = Harness(slots=1, max_queued=2)
    fx = h.award(A1, named="other")
    assert fx.decisions == [
        Decision(A1[1], False, "award item names monitor 'other', the award 'm'")
    ]
    assert h.award(A1, refusal="no such plugin").decisions[0].reason == "no such plugin"
    assert [d.accepted for d in h.award(A1, B1, jk("z")).decisions] == [True, True, False]
    assert h.award(jk("y")).decisions[0].reason == "slots gone: queue is full"
    assert h.m.busy_reason() == "queue is full"
    h.step(Close())
    assert h.m.busy_reason() == "shutting down"


def test_the_gate_sees_the_queue_and_free_slots_of_the_batch() -> None:
    seen: list[tuple[float, int, int, int]] = []

    def gate(expected: float, queued: int, free: int, slots: int) -> str | None:
        seen.append((expected, queued, free, slots))
        return "draining" if queued >= 2 else None

    h = Harness(slots=2, gate=gate)
    fx = h.award(A1, B1, jk("z"))
    assert [d.reason for d in fx.decisions] == ["", "", "draining"]
    assert seen == [(0.0, 0, 2, 2), (0.0, 1, 1, 2), (0.0, 2, 0, 2)]


def test_progress_is_reported_while_running() -> None:
    h = Harness(slots=1)
    h.award(A1, B1)
    fx = h.step(Progress(A1, "STAGING", "fetching", {"uri": "u"}))
    assert fx.effects == [Emit(A1, "STAGING", "fetching", {"uri": "u"})]
    assert h.step(Progress(B1, "RUNNING")).effects == []  # not started: dropped
    assert h.step(Progress(jk("gone"), "RUNNING")).effects == []


def test_lost_attempts_fail() -> None:
    h = Harness(slots=1)
    fx = h.step(Lost((A1, B1)))
    msg = "the contractor restarted and lost this attempt"
    assert fx.effects == [Emit(A1, "FAILED", msg, final=True), Emit(B1, "FAILED", msg, final=True)]


def test_close_stops_running_jobs_and_refuses_work() -> None:
    h = Harness(slots=2)
    h.award(A1, B1)
    h.step(Started(A1, "shell"))
    assert h.step(Close()).effects == [Kill(A1, "shell")]
    assert h.m.snapshot() == {A1: JobState.STOPPING, B1: JobState.STOPPING}
    assert h.award(jk("z")).decisions[0].reason == "slots gone: queue is full"


@pytest.mark.parametrize(
    "inp",
    [
        Finished(A1, "SUCCEEDED"),
        Started(A1, "shell"),
        Progress(B1, "SUCCEEDED"),
        Finished(B1, "RUNNING"),
    ],
    ids=["finished-unknown", "started-unknown", "progress-final", "finished-not-final"],
)
def test_illegal_inputs_raise_when_strict_and_are_refused_otherwise(inp: J.Input) -> None:
    h = Harness(slots=1)
    h.award(B1)
    with pytest.raises(IllegalJobTransition):
        h.m.step(h.now, inp)
    lax = ContractorMachine(ContractorConfig(slots=1))
    lax.step(0.0, J.Awarded("m", (J.AwardItem(B1[1], "shell", "shell"),)))
    lax.step(0.0, J.Persisted((B1,)))
    before = lax.snapshot()
    assert lax.step(1.0, inp).effects == []
    assert (lax.illegal, lax.snapshot()) == (1, before)
    lax.validate()


_ILLEGAL = [
    (old, new) for old, new in itertools.product(JobState, JobState) if new not in ALLOWED[old]
]


@pytest.mark.parametrize(("old", "new"), _ILLEGAL, ids=[f"{o}->{n}" for o, n in _ILLEGAL])
def test_every_move_outside_the_table_is_refused(old: JobState, new: JobState) -> None:
    strict = ContractorMachine(ContractorConfig(slots=1, strict=True))
    job = JobRecord(A1, "shell", "shell", state=old)
    with pytest.raises(IllegalJobTransition):
        strict._move(job, new)
    lax = ContractorMachine(ContractorConfig(slots=1))
    assert not lax._move(job, new) and job.state is old and lax.illegal == 1


class _Recording(ContractorMachine):
    def __init__(self, config: ContractorConfig, edges: set[tuple[JobState, JobState]]) -> None:
        super().__init__(config)
        self.edges = edges

    def _move(self, job: JobRecord, new: JobState) -> bool:
        old = job.state
        moved = super()._move(job, new)
        if moved:
            self.edges.add((old, new))
        return moved


def test_the_scenarios_take_every_edge_of_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    edges: set[tuple[JobState, JobState]] = set()
    import tests.unit.control.contractor_harness as harness

    monkeypatch.setattr(harness, "ContractorMachine", lambda c, gate=None: _Recording(c, edges))
    for test in (
        test_an_award_is_persisted_then_started,
        test_a_failed_contract_write_forgets_the_job_without_an_event,
        test_two_attempts_of_one_activity_never_run_at_once,
        test_cancel_before_start_ends_queued_and_held_jobs_at_once,
        test_a_held_job_is_cancelled_at_once,
        test_cancel_kills_a_running_attempt_and_reports_it_cancelled,
        test_a_hand_back_stops_the_attempt_and_reports_it_handed_back,
    ):
        test()
    assert edges == {(old, new) for old, targets in ALLOWED.items() for new in targets}


def test_validate_finds_a_broken_invariant() -> None:
    h = Harness(slots=1)
    h.award(A1, B1)
    h.m.validate()
    h.m._queue.appendleft(B1)
    with pytest.raises(AssertionError, match="queued twice"):
        h.m.validate()
    h.m._queue.popleft()
    h.m._busy[("c", "b")] = B1  # two jobs holding the one slot
    with pytest.raises(AssertionError, match="busy"):
        h.m.validate()


def test_the_states_in_events_are_activity_states() -> None:
    assert (J.SUCCEEDED, J.FAILED, J.CANCELLED) == (st.SUCCEEDED, st.FAILED, st.CANCELLED)
    assert J.FINAL_STATES == st.TERMINAL - {st.SKIPPED}


def test_the_machine_imports_no_io() -> None:
    code = (
        "import sys, zambeze_mesh.control.contractor\n"
        "print(sorted(m for m in ('asyncio', 'grpc', 'sqlite3', 'networkx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
