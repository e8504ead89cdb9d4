"""The monitor's journal and committer: commit, then apply (real SQLite, no network)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from zambeze_mesh.agent.committer import Committer
from zambeze_mesh.agent.journal import CommitFault, CommitFaults, Journal, Live, graph_of
from zambeze_mesh.control.records import IllegalTransitionError, Transaction
from zambeze_mesh.control.states import CampaignState
from zambeze_mesh.errors import Unavailable
from zambeze_mesh.scheduling import CampaignDag, activity_from_spec
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.store.db import Store
from zambeze_mesh.v1 import campaigns_pb2, common_pb2


def _campaign(store: Store, names: list[str]) -> Live:
    specs = [common_pb2.ActivitySpec(name=n, shell=common_pb2.ShellSpec(cmd="true")) for n in names]
    req = campaigns_pb2.SubmitRequest(name="c", activities=specs)
    dag = CampaignDag([activity_from_spec(s) for s in specs])
    live = Live(
        "c1", "c", graph_of(dag), {n: cstore.ActivityRow(n, st.PENDING) for n in names}, 0, dag=dag
    )
    tx = Transaction(strict=True)
    tx.campaign(live, CampaignState.RUNNING, "submitted")
    j = Journal(store, {})
    j.before.append(lambda db: cstore.insert_campaign(db, "c1", req, 0, names))
    j.add(tx)
    j.write()
    j.applied()
    return live


def _commit(j: Journal) -> None:
    try:
        j.write()
    except BaseException:
        j.rollback()
        raise
    j.applied()


def _memory(live: Live) -> tuple[object, ...]:
    rows = tuple(
        (r.name, r.state, r.attempt, r.agent, r.message, dict(r.detail), r.result, r.infra_retries)
        for r in live.acts.values()
    )
    return rows, live.seq, live.open, live.state, live.message, len(live.recent)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "zmesh.db")


async def test_failed_write_leaves_memory_and_store_as_they_were(store: Store) -> None:
    live = _campaign(store, ["a", "b"])
    faults = CommitFaults()
    memory = _memory(live)
    tx1, tx2 = Transaction(strict=True), Transaction(strict=True)
    tx1.activity(live, "a", st.BIDDING)
    tx1.activity(live, "a", st.AWARDED, agent="x", detail={"k": "v"}, infra_retries=2)
    tx2.activity(live, "b", st.BIDDING)
    tx2.activity(live, "b", st.FAILED)
    tx2.campaign(live, CampaignState.FAILED, "x")
    j = Journal(store, {"c1": live}, faults)
    j.add(tx1)
    j.add(tx2)
    faults.fail(1)
    with pytest.raises(CommitFault):
        _commit(j)
    assert _memory(live) == memory
    assert len(cstore.events_after(store, "c1", 0)) == 1
    assert [a.state for a in cstore.load_activities(store, "c1")] == [st.PENDING, st.PENDING]
    assert cstore.load_campaign(store, "c1").last_seq == 1  # type: ignore[union-attr]
    assert not live.ended

    # The same step again, now committed: seqs continue without a gap.
    tx = Transaction(strict=True)
    tx.activity(live, "a", st.BIDDING)
    j = Journal(store, {"c1": live}, faults)
    j.add(tx)
    _commit(j)
    assert [e.seq for e in cstore.events_after(store, "c1", 0)] == [1, 2]
    assert [e.seq for e in live.recent] == [1, 2] and live.committed_seq == 2


async def test_illegal_transition_raises_when_strict_and_is_refused_otherwise(
    store: Store,
) -> None:
    live = _campaign(store, ["a"])
    with pytest.raises(IllegalTransitionError):
        Transaction(strict=True).activity(live, "a", st.RUNNING)  # PENDING -> RUNNING
    tx = Transaction(strict=False)
    assert tx.activity(live, "a", st.RUNNING) is False
    assert live.acts["a"].state == st.PENDING and live.seq == 1 and not tx
    assert tx.activity(live, "a", st.BIDDING) is True
    assert tx.activity(live, "a", st.RETRYING) is True
    assert tx.activity(live, "a", st.RETRYING) is False  # RETRYING -> RETRYING


async def test_committer_applies_only_after_the_commit_and_retries_failed_writes(
    store: Store,
) -> None:
    live = _campaign(store, ["a", "b", "c"])
    faults = CommitFaults()
    lives = {"c1": live}
    applied: list[tuple[str, int]] = []
    committer = Committer(lambda: Journal(store, lives, faults), lambda exc: None)

    def step(name: str) -> object:
        def decide(j: Journal) -> object:
            tx = Transaction(strict=True)
            tx.activity(live, name, st.BIDDING)
            j.add(tx)
            # What the step applies sees the records committed.
            return lambda: applied.append((name, cstore.load_campaign(store, "c1").last_seq))  # type: ignore[union-attr]

        return decide

    faults.fail(1)
    faults.fail(2)
    first = committer.step(step("a"), wait=True)  # type: ignore[arg-type]
    second = committer.step(step("b"), wait=True)  # type: ignore[arg-type]
    assert first is not None and second is not None
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert committer.failures == 2 and faults.failed == 2
    assert [name for name, _ in applied] == ["a", "b"]
    assert all(seq >= 2 for _, seq in applied)
    seqs = [e.seq for e in cstore.events_after(store, "c1", 0)]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 3
    await committer.close()


async def test_committer_gives_up_after_its_bound_and_refuses_later_steps(store: Store) -> None:
    live = _campaign(store, ["a"])
    faults = CommitFaults()
    gave_up: list[BaseException] = []
    committer = Committer(
        lambda: Journal(store, {"c1": live}, faults), gave_up.append, give_up_after_s=0.3
    )
    faults.fail_for(3600)
    memory = _memory(live)

    def decide(j: Journal) -> None:
        tx = Transaction(strict=True)
        tx.activity(live, "a", st.BIDDING)
        j.add(tx)

    done = committer.step(decide, wait=True)
    assert done is not None
    with pytest.raises(Unavailable):
        await asyncio.wait_for(done, 10)
    assert len(gave_up) == 1 and committer.broken is not None
    assert _memory(live) == memory
    with pytest.raises(Unavailable):
        committer.step(decide, wait=True)
    await committer.close()


async def test_a_failing_step_is_dropped_and_the_others_commit(store: Store) -> None:
    live = _campaign(store, ["a", "b"])
    committer = Committer(lambda: Journal(store, {"c1": live}), lambda exc: None)

    def good(j: Journal) -> None:
        tx = Transaction(strict=True)
        tx.activity(live, "a", st.BIDDING)
        j.add(tx)

    def bad(j: Journal) -> None:
        tx = Transaction(strict=True)
        j.add(tx)
        tx.activity(live, "b", st.BIDDING)
        raise RuntimeError("a bug")

    ok = committer.step(good, wait=True)
    broken = committer.step(bad, wait=True)
    assert ok is not None and broken is not None
    await ok
    with pytest.raises(RuntimeError):
        await broken
    assert live.acts["a"].state == st.BIDDING and live.acts["b"].state == st.PENDING
    assert [e.activity for e in cstore.events_after(store, "c1", 1)] == ["a"]
    await committer.close()


def test_control_imports_no_asyncio_grpc_sqlite3_networkx() -> None:
    """The control plane's state machines are pure: a fresh interpreter importing
    every module of ``zambeze_mesh.control`` loads none of these."""
    code = (
        "import pkgutil, importlib, sys, zambeze_mesh.control as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module(c.__name__ + '.' + m.name)\n"
        "bad = [m for m in ('asyncio','grpc','sqlite3','networkx') if m in sys.modules]\n"
        "print(len(list(pkgutil.iter_modules(c.__path__))), bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert int(out[0]) >= 1
    assert out[1].strip() == "[]"
