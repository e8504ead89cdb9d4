"""CampaignMachine driven directly: typed inputs in, effects out (no network, disk or sleeps)."""

from __future__ import annotations

import itertools

import pytest

from zambeze_mesh.control.campaign import (
    MAX_INFRA_RETRIES,
    CampaignMachine,
    CancelRequested,
    Deferred,
    Effects,
    Key,
    MemberDown,
    Placed,
    PlacementFailed,
    Report,
    Reported,
    Resumed,
    Submitted,
)
from zambeze_mesh.control.graph import Graph
from zambeze_mesh.control.records import (
    ActivityRecord,
    ActivityRow,
    CampaignRecord,
    CampaignRun,
    IllegalTransitionError,
    Transaction,
)
from zambeze_mesh.control.states import ALLOWED, ActivityState, CampaignState

A = ActivityState
C = CampaignState


def new_run(
    preds: dict[str, list[str]], retries: dict[str, int] | None = None, cid: str = "c"
) -> CampaignRun:
    """A campaign whose activities are given in topological order with their preds."""
    graph = Graph.of(list(preds), preds, retries or {})
    return CampaignRun(cid, "t", graph, {n: ActivityRow(n, A.PENDING) for n in preds}, 0)


def commit(m: CampaignMachine, fx: Effects) -> Effects:
    """What the shell does once the step's records are committed."""
    if fx.started is not None:
        m.runs[fx.started.id] = fx.started
    for run in fx.tx.finished:
        m.runs.pop(run.id, None)
    m.validate()
    return fx


def started(preds: dict[str, list[str]], **kw: object) -> tuple[CampaignMachine, CampaignRun]:
    m = CampaignMachine(strict=True)
    run = new_run(preds, **kw)  # type: ignore[arg-type]
    commit(m, m.step(0, Submitted(run, "go")))
    return m, run


def acts(fx: Effects) -> list[tuple[str, str]]:
    return [(r.activity, r.state) for _, r in fx.tx.records if isinstance(r, ActivityRecord)]


def camp(fx: Effects) -> list[str]:
    return [r.state for _, r in fx.tx.records if isinstance(r, CampaignRecord)]


def k(run: CampaignRun, name: str) -> Key:
    return Key(run.id, name, run.acts[name].attempt)


def report(
    m: CampaignMachine,
    run: CampaignRun,
    name: str,
    state: ActivityState,
    who: str = "w1",
    **kw: object,
) -> Effects:
    rep = Report(k(run, name), state, **kw)  # type: ignore[arg-type]
    return commit(m, m.step(0, Reported(who, (rep,))))


def place(m: CampaignMachine, run: CampaignRun, name: str, who: str = "w1") -> Effects:
    return commit(m, m.step(0, Placed(((k(run, name), who),))))


def run_to_success(m: CampaignMachine, run: CampaignRun, name: str, who: str = "w1") -> Effects:
    place(m, run, name, who)
    report(m, run, name, A.RUNNING, who)
    return report(m, run, name, A.SUCCEEDED, who, result=b"r")


DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_submit_offers_the_roots_and_numbers_records_from_one() -> None:
    m = CampaignMachine(strict=True)
    run = new_run({"a": [], "b": [], "c": ["a"]})
    fx = m.step(0, Submitted(run, "go"))
    assert camp(fx) == [C.RUNNING]
    assert acts(fx) == [("a", A.BIDDING), ("b", A.BIDDING)]
    assert fx.offer == [("c", ["a", "b"])]
    assert [r.seq for _, r in fx.tx.records] == [1, 2, 3]
    assert fx.started is run and "c" not in m.runs  # driven once committed
    commit(m, fx)
    assert m.runs == {"c": run}


def test_a_success_offers_the_successors_it_unblocks_and_the_last_ends_the_campaign() -> None:
    m, run = started(DIAMOND)
    fx = run_to_success(m, run, "a")
    assert acts(fx) == [("a", A.SUCCEEDED), ("b", A.BIDDING), ("c", A.BIDDING)]
    assert fx.offer == [("c", ["b", "c"])]
    run_to_success(m, run, "b")
    fx = run_to_success(m, run, "c")
    assert fx.offer == [("c", ["d"])]
    fx = run_to_success(m, run, "d")
    assert camp(fx) == [C.SUCCEEDED] and "c" not in m.runs
    assert run.acts["d"].result == b"r"


def test_placed_awards_the_current_attempt_only() -> None:
    m, run = started({"a": []})
    stale = Key("c", "a", 7)
    fx = commit(m, m.step(0, Placed(((stale, "w1"),))))
    assert acts(fx) == [] and fx.awarded == []
    fx = place(m, run, "a")
    assert acts(fx) == [("a", A.AWARDED)] and fx.awarded == [("c", "a")]
    assert run.acts["a"].agent == "w1"
    assert acts(place(m, run, "a")) == []  # already AWARDED


def test_deferred_records_ready_once_then_waits_inside_ready() -> None:
    m, run = started({"a": []})
    fx = commit(m, m.step(0, Deferred(((k(run, "a"), "busy"),))))
    assert acts(fx) == [("a", A.READY)] and fx.waiting == [("c", "a", "waiting for room: busy")]
    fx = commit(m, m.step(0, Deferred(((k(run, "a"), "busy"),))))
    assert acts(fx) == [] and len(fx.waiting) == 1
    assert acts(place(m, run, "a")) == [("a", A.AWARDED)]


def test_a_report_that_overtakes_its_award_is_adopted_with_awarded_first() -> None:
    m, run = started({"a": []})
    rep = Report(k(run, "a"), A.RUNNING)
    fx = commit(m, m.step(0, Reported("w1", (rep,))))
    assert acts(fx) == []  # the contract net did not award it to w1
    fx = commit(m, m.step(0, Reported("w1", (rep,), frozenset({k(run, "a")}))))
    assert acts(fx) == [("a", A.AWARDED), ("a", A.RUNNING)]
    assert run.acts["a"].agent == "w1"


def test_reports_from_others_stale_attempts_and_duplicates_are_ignored() -> None:
    m, run = started({"a": []})
    place(m, run, "a")
    assert acts(report(m, run, "a", A.RUNNING, "intruder")) == []
    stale = Report(Key("c", "a", 2), A.SUCCEEDED)
    assert acts(commit(m, m.step(0, Reported("w1", (stale,))))) == []
    assert acts(report(m, run, "a", A.RUNNING)) == [("a", A.RUNNING)]
    assert acts(report(m, run, "a", A.RUNNING)) == []
    unknown = Report(k(run, "a"), None)
    assert acts(commit(m, m.step(0, Reported("w1", (unknown,))))) == []


def test_staging_repeats_once_per_input() -> None:
    m, run = started({"a": []})
    place(m, run, "a")
    assert acts(report(m, run, "a", A.STAGING, message="x")) == [("a", A.STAGING)]
    assert acts(report(m, run, "a", A.STAGING, message="x")) == []
    assert acts(report(m, run, "a", A.STAGING, message="y")) == [("a", A.STAGING)]


def test_a_failed_attempt_with_retries_left_is_offered_again() -> None:
    m, run = started({"a": []}, retries={"a": 1})
    place(m, run, "a")
    fx = report(m, run, "a", A.FAILED, message="boom")
    assert acts(fx) == [("a", A.RETRYING), ("a", A.BIDDING)]
    assert run.acts["a"].attempt == 2 and fx.offer == [("c", ["a"])]
    place(m, run, "a", "w2")
    fx = report(m, run, "a", A.FAILED, "w2", message="boom again")
    assert acts(fx) == [("a", A.FAILED)] and camp(fx) == [C.FAILED]


def test_a_failure_skips_every_dependant_and_fails_the_campaign() -> None:
    m, run = started(DIAMOND)
    run_to_success(m, run, "a")
    place(m, run, "b")
    fx = report(m, run, "b", A.FAILED, message="boom")
    assert acts(fx) == [("b", A.FAILED), ("d", A.SKIPPED)]
    assert camp(fx) == []  # c still runs
    fx = run_to_success(m, run, "c")
    assert fx.offer == [] and camp(fx) == [C.FAILED]
    assert "'b' failed: boom" in run.message


def test_a_hand_back_is_a_new_attempt_not_a_failure() -> None:
    m, run = started({"a": []})
    place(m, run, "a")
    fx = report(m, run, "a", A.FAILED, detail=(("handed_back", "1"),), message="walltime")
    assert acts(fx) == [("a", A.RETRYING), ("a", A.BIDDING)]
    assert run.acts["a"].infra_retries == 1 and run.acts["a"].attempt == 2


def test_placement_failure_fails_the_activity() -> None:
    m, run = started({"a": [], "b": ["a"]})
    fx = commit(m, m.step(0, PlacementFailed(k(run, "a"), "no agent fits")))
    assert acts(fx) == [("a", A.FAILED), ("b", A.SKIPPED)] and camp(fx) == [C.FAILED]


def test_a_lost_contractor_means_new_attempts_until_it_happened_too_often() -> None:
    m, run = started({"a": [], "b": []})
    place(m, run, "a", "w1")
    place(m, run, "b", "w2")
    for i in range(MAX_INFRA_RETRIES):
        fx = commit(m, m.step(0, MemberDown("w1")))
        assert acts(fx) == [("a", A.RETRYING), ("a", A.BIDDING)]
        assert fx.lost == [("c", "w1", 1)] and run.acts["a"].attempt == i + 2
        place(m, run, "a", "w1")
    fx = commit(m, m.step(0, MemberDown("w1")))
    assert acts(fx) == [("a", A.FAILED)]
    assert run.acts["b"].state == A.AWARDED  # w2's work is untouched


def test_cancel_reaches_every_placed_attempt_and_ends_the_campaign() -> None:
    m, run = started({"a": [], "b": [], "c": ["a"]})
    place(m, run, "a", "w1")
    report(m, run, "a", A.RUNNING, "w1")
    fx = commit(m, m.step(0, CancelRequested("c")))
    assert fx.cancel_on == [(Key("c", "a", 1), "w1")]
    assert fx.withdraw == ["c"]
    assert acts(fx) == [("a", A.CANCELLED), ("b", A.CANCELLED), ("c", A.CANCELLED)]
    assert camp(fx) == [C.CANCELLED] and "c" not in m.runs
    assert commit(m, m.step(0, CancelRequested("c"))).tx.records == []


def test_resume_renegotiates_what_was_being_negotiated_and_keeps_what_was_placed() -> None:
    run = new_run({"a": [], "b": [], "c": []})
    run.acts["a"].state = A.BIDDING
    run.acts["b"].state, run.acts["b"].agent = A.RUNNING, "w1"
    run.acts["c"].state, run.acts["c"].attempt = A.RETRYING, 2
    m = CampaignMachine({"c": run}, strict=True)
    fx = commit(m, m.step(0, Resumed("c")))
    assert acts(fx) == [("a", A.RETRYING), ("a", A.BIDDING), ("c", A.BIDDING)]
    assert fx.cancel_everywhere == [Key("c", "a", 1), Key("c", "c", 2)]
    assert run.acts["a"].attempt == 2 and run.acts["b"].state == A.RUNNING


def test_rollback_restores_memory_exactly() -> None:
    m, run = started(DIAMOND)
    before = repr(run)
    fx = m.step(0, CancelRequested("c"))
    assert repr(run) != before
    fx.rollback()
    assert repr(run) == before
    m.validate()


def test_every_transition_of_the_table_and_only_those() -> None:
    states = list(ActivityState)
    for old, new in itertools.product(states, states):
        run = new_run({"a": []})
        run.acts["a"].state = old
        run.open = 0 if old in (A.SUCCEEDED, A.FAILED, A.CANCELLED, A.SKIPPED) else 1
        tx = Transaction(strict=True)
        if new in ALLOWED[old]:
            assert tx.activity(run, "a", new)
            assert run.acts["a"].state == new
        else:
            with pytest.raises(IllegalTransitionError):
                tx.activity(run, "a", new)
            assert Transaction(strict=False).activity(run, "a", new) is False
            assert run.acts["a"].state == old and run.seq == 0


def test_the_table_has_no_drift() -> None:
    assert A.RETRYING not in ALLOWED[A.RETRYING]
    assert A.RUNNING not in ALLOWED[A.BIDDING]  # an adopted report is AWARDED first
    assert A.STAGING in ALLOWED[A.STAGING]
    assert all(not ALLOWED[s] for s in (A.SUCCEEDED, A.FAILED, A.CANCELLED, A.SKIPPED))
