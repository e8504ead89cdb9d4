"""Which runs dir a contractor run's jail exposes, per ``sandbox_functions`` (a
stand-in agent with a real :class:`Sandbox`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from zambeze_mesh.agent.contractor import Contractor, Job
from zambeze_mesh.agent.staging import Prepared, run_scopes
from zambeze_mesh.execution.sandbox import Jail, Sandbox, bwrap_problem
from zambeze_mesh.scheduling import ActivityDef, TenderKey
from zambeze_mesh.v1 import common_pb2, scheduling_pb2

pytestmark = pytest.mark.skipif(bool(bwrap_problem()), reason=bwrap_problem() or "ok")

ALICE = "spiffe://m/client/alice"
BOB = "spiffe://m/client/bob"


def _agent(tmp_path: Path, mode: str) -> SimpleNamespace:
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    sandbox = Sandbox("auto", home=home, data_dir=data)
    config = SimpleNamespace(slots=1, max_queued=0, sandbox_functions=mode)
    return SimpleNamespace(mesh="m", data_dir=data, sandbox=sandbox, config=config)


def _job(campaign: str, owner: str, monitor: str = "mon", function: bool = True) -> Job:
    spec = common_pb2.ActivitySpec(name="f")
    if function:
        spec.python.function = b"shipped"
    else:
        spec.shell.cmd = "true"
    tender = scheduling_pb2.Tender(
        campaign_id=campaign, activity="f", attempt=1, spec=spec, owner=owner
    )
    act = ActivityDef(name="f", kind="python" if function else "shell", plugin="python")
    return Job(TenderKey(campaign, "f", 1), monitor, act, scheduling_pb2.AwardItem(tender=tender))


def _jail(agent: SimpleNamespace, job: Job) -> Jail:
    runs = agent.data_dir / "runs" / run_scopes(agent.mesh, job)[1]
    work = runs / ("functions" if job.item.tender.spec.python.function else "f")
    work.mkdir(parents=True, exist_ok=True)
    c = Contractor(
        name="a",
        mesh=agent.mesh,
        slots=1,
        max_queued=0,
        sandbox_functions=agent.config.sandbox_functions,
        data_dir=agent.data_dir,
        policy=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        members=None,  # type: ignore[arg-type]
        catalog=None,  # type: ignore[arg-type]
        sandbox=agent.sandbox,
        registry=None,  # type: ignore[arg-type]
        reporter=None,  # type: ignore[arg-type]
        stager=None,  # type: ignore[arg-type]
    )
    jail = c._jail(job, Prepared(work, work / "output"))
    assert jail is not None
    return jail


def _binds(jail: Jail) -> set[str]:
    return {*jail.ro, *jail.rw}


def test_owner_mode_shares_one_jail_per_owner_and_monitor(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "owner")
    one, two = _jail(agent, _job("c1", ALICE)), _jail(agent, _job("c2", ALICE))
    bob = _jail(agent, _job("c3", BOB))
    squat = _jail(agent, _job("c4", ALICE, monitor="evil"))  # claims alice as owner
    assert one.key == two.key and one.spare
    assert len({one.key, bob.key, squat.key}) == 3
    runs = agent.data_dir / "runs"
    (alice_dir,) = one.rw
    assert Path(alice_dir).parent.parent == runs  # runs/<owner>/<monitor>
    for other in (bob, squat):
        assert not any(p.startswith(alice_dir) for p in _binds(other))
        assert not any(p.startswith(q) for p in _binds(one) for q in other.rw)


def test_campaign_mode_and_shell_runs_see_their_campaign_only(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "campaign")
    one, two = _jail(agent, _job("c1", ALICE)), _jail(agent, _job("c2", ALICE))
    assert one.key != two.key and not one.spare
    shell = _jail(_agent(tmp_path / "o", "owner"), _job("c1", ALICE, function=False))
    assert not shell.spare
    (scope,) = [p for p in shell.ro if p.endswith("/c1")]
    assert Path(scope).parent.parent.parent == tmp_path / "o" / "home" / "data" / "runs"


def test_run_scopes_names_are_single_components() -> None:
    for cid in ("..", ".", "a/../../b"):
        owner_scope, campaign_scope = run_scopes("m", _job(cid, ALICE, monitor=".."))
        parts = campaign_scope.split("/")
        assert len(parts) == 3 and ".." not in parts and "." not in parts
        assert campaign_scope.startswith(owner_scope + "/")
    assert run_scopes("m", _job("c", ""))[0] != run_scopes("m", _job("c", ALICE))[0]
