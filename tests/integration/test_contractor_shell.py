"""The contractor's async shell on a real agent (real store, real shell processes):
contracts are written before a job runs, a succeeded attempt never runs again on a
repeated award, and two attempts of one activity never run at the same time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.inproc import mesh, wait_until
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.contractor import Contractor
from zambeze_mesh.control.jobs import JobState
from zambeze_mesh.scheduling import TenderKey
from zambeze_mesh.v1 import common_pb2, scheduling_pb2

MONITOR = "agent-monitor"  # a monitor that is not in the mesh: events wait in the outbox


def award(activity: str, attempt: int, cmd: str) -> scheduling_pb2.AwardRequest:
    spec = common_pb2.ActivitySpec(name=activity, shell=common_pb2.ShellSpec(cmd=cmd))
    tender = scheduling_pb2.Tender(campaign_id="c1", activity=activity, attempt=attempt, spec=spec)
    item = scheduling_pb2.AwardItem(tender=tender, monitor=MONITOR)
    return scheduling_pb2.AwardRequest(monitor=MONITOR, items=[item])


def contract_state(agent: Agent, activity: str, attempt: int) -> str:
    rows = agent.require_store().read(
        "SELECT state FROM contracts WHERE monitor = ? AND activity = ? AND attempt = ?",
        (MONITOR, activity, attempt),
    )
    return str(rows[0]["state"]) if rows else ""


def contractor_of(agent: Agent) -> Contractor:
    assert agent.contractor is not None
    return agent.contractor


class _Fails(Exception):
    pass


@contextlib.contextmanager
def _failing_tx() -> Iterator[None]:
    raise _Fails("disk full")
    yield  # pragma: no cover


async def test_a_job_runs_only_once_its_contract_is_written_and_never_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "runs.txt"
    req = award("a", 1, f"echo run >> {marker}")
    key = (MONITOR, TenderKey("c1", "a", 1))
    async with mesh(tmp_path, 1) as (agent,):
        c = contractor_of(agent)
        store = agent.require_store()
        monkeypatch.setattr(store, "tx", _failing_tx)
        with pytest.raises(_Fails):
            c.award(req)
        monkeypatch.undo()
        assert not c.jobs and c.machine.job(key) is None  # forgotten, not half-accepted
        assert contract_state(agent, "a", 1) == ""

        (decision,) = c.award(req)
        assert decision.accepted
        assert contract_state(agent, "a", 1) == "AWARDED"
        await wait_until(lambda: not c.jobs, 30, "the run to end")
        await wait_until(lambda: contract_state(agent, "a", 1) == "SUCCEEDED", 30, "SUCCEEDED")

        (again,) = c.award(req)  # the award repeated (a resent or late message)
        assert again.accepted and not c.jobs
        assert c.machine.succeeded(key)
        assert marker.read_text() == "run\n"  # it ran exactly once


async def test_two_attempts_of_one_activity_run_one_after_the_other(tmp_path: Path) -> None:
    log = tmp_path / "order.txt"
    first = award("b", 1, f"echo start1 >> {log}; sleep 1; echo end1 >> {log}")
    second = award("b", 2, f"echo start2 >> {log}")
    async with mesh(tmp_path, 1, configure=lambda i: {"slots": 2}) as (agent,):
        c = contractor_of(agent)
        assert c.award(first)[0].accepted
        assert c.award(second)[0].accepted
        held = (MONITOR, TenderKey("c1", "b", 2))
        assert c.machine.snapshot()[held] is JobState.HELD  # a free slot, but it waits
        await wait_until(lambda: not c.jobs, 30, "both runs to end")
        assert log.read_text().split() == ["start1", "end1", "start2"]
        assert contract_state(agent, "b", 1) == contract_state(agent, "b", 2) == "SUCCEEDED"
