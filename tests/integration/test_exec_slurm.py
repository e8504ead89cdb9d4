"""Shell and Python activities as real Slurm jobs through the ``batch`` plugin (PSI/J).

Needs a single-node Slurm: the one named by ``$SLURM_CONF`` when it answers, else
``scripts/slurm/start-single-node`` starts one (root; installs slurm-wlm and
munge when missing). Skipped, with the reason, only when that is impossible.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import grpc
import pytest

from tests.helpers.inproc import mesh
from tests.integration.test_campaigns_e2e import by_name, submit_and_watch
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
pytest.importorskip("psij")
ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "scripts" / "slurm" / "start-single-node"


def _answers(conf: str) -> bool:
    if not shutil.which("sinfo"):
        return False
    env = dict(os.environ, SLURM_CONF=conf)
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and any(s in res.stdout for s in ("idle", "mix", "alloc", "comp"))


@pytest.fixture(scope="module")
def slurm_conf() -> Iterator[str]:
    """A running Slurm's config path, exported as SLURM_CONF for the agents."""
    conf = os.environ.get("SLURM_CONF", "")
    if not (conf and _answers(conf)):
        if os.geteuid() != 0 and not shutil.which("slurmd"):
            pytest.skip("no Slurm here: slurm-wlm is not installed and this is not root")
        try:
            res = subprocess.run(
                [str(START)], capture_output=True, text=True, timeout=600, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"could not start Slurm: {exc}")
        if res.returncode != 0:
            pytest.skip(f"could not start Slurm: {res.stderr.strip()[-500:]}")
        conf = res.stdout.strip().splitlines()[-1]
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", conf)
    yield conf
    mp.undo()


def scontrol_state(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=10
    ).stdout
    for word in out.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return ""


def slurm_agents(walltime: str = "") -> object:
    return lambda i: {"slots": 2, "scheduler": "slurm", "walltime": walltime}


async def test_shell_and_function_run_as_slurm_jobs(tmp_path: Path, slurm_conf: str) -> None:
    def add(a: int, b: int) -> int:  # nested: shipped by value
        return a + b

    fn = cloudpickle.dumps((add, (2, 3), {}))
    async with mesh(tmp_path, 1, configure=slurm_agents("5")) as agents:
        agent = agents[0]
        rec = agent.gossip._records[agent.name] if agent.gossip else None
        assert rec is not None and rec.capabilities.scheduler == "slurm"
        assert "debug" in rec.capabilities.partitions
        assert "batch" in rec.capabilities.plugins
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [
                S.ActivitySpec(
                    name="hello",
                    shell=S.ShellSpec(
                        cmd='echo "job $SLURM_JOB_ID" > $ZMESH_OUTPUT_DIR/job.txt; echo out'
                    ),
                ),
                S.ActivitySpec(name="fn", python=S.PythonSpec(function=fn)),
            ]
            status, events = await submit_and_watch(stub, acts)
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
    hello = [e for e in events if e.activity == "hello"]
    states = [e.state for e in hello]
    queued = [e for e in hello if e.state == S.ACTIVITY_STATE_QUEUED]
    assert queued and queued[0].detail["job_id"].isdigit()
    job_id = queued[0].detail["job_id"]
    assert states.index(S.ACTIVITY_STATE_QUEUED) < states.index(S.ACTIVITY_STATE_SUCCEEDED)
    if S.ACTIVITY_STATE_RUNNING in states:  # a very short job may finish between two polls
        assert states.index(S.ACTIVITY_STATE_QUEUED) < states.index(S.ACTIVITY_STATE_RUNNING)
    acts_ = by_name(status)
    assert acts_["hello"].detail["job_id"] == job_id
    job_txt = Path(acts_["hello"].detail["output_dir"]) / "job.txt"
    assert job_txt.read_text().strip() == f"job {job_id}"
    assert acts_["hello"].detail["stdout_tail"].strip() == "out"
    assert scontrol_state(job_id) == "COMPLETED"
    assert cloudpickle.loads(acts_["fn"].result) == 5
    assert scontrol_state(acts_["fn"].detail["job_id"]) == "COMPLETED"


async def test_failing_job_and_cancel_scancels(tmp_path: Path, slurm_conf: str) -> None:
    async with mesh(tmp_path, 1, configure=slurm_agents()) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            bad, _ = await submit_and_watch(
                stub, [S.ActivitySpec(name="bad", shell=S.ShellSpec(cmd="echo oops >&2; exit 3"))]
            )
            resp = await stub.Submit(
                campaigns_pb2.SubmitRequest(
                    name="c",
                    activities=[S.ActivitySpec(name="long", shell=S.ShellSpec(cmd="sleep 120"))],
                )
            )
            job_id = ""
            events = []
            watch = stub.Watch(
                campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
            )
            async with asyncio.timeout(60):
                async for ev in watch:
                    events.append(ev)
                    if ev.state == S.ACTIVITY_STATE_QUEUED:
                        job_id = ev.detail["job_id"]
                    if ev.state == S.ACTIVITY_STATE_RUNNING and job_id:
                        assert scontrol_state(job_id) == "RUNNING"
                        await stub.Cancel(
                            campaigns_pb2.CancelCampaignRequest(campaign_id=resp.campaign_id)
                        )
    b = by_name(bad)["bad"]
    assert b.state == S.ACTIVITY_STATE_FAILED
    assert b.detail["exit_code"] == "3" and "oops" in b.detail["stderr_tail"]
    assert job_id
    assert any(e.state == S.ACTIVITY_STATE_CANCELLED for e in events)
    for _ in range(50):
        if scontrol_state(job_id) == "CANCELLED":
            break
        await asyncio.sleep(0.2)
    assert scontrol_state(job_id) == "CANCELLED"


@pytest.mark.slow
async def test_walltime_exceeded_fails_with_reason(tmp_path: Path, slurm_conf: str) -> None:
    # Slurm counts time limits in whole minutes: a 1 s timeout becomes 1 minute, and
    # slurmctld checks limits about every 30 s, so this takes 60-100 s.
    async with mesh(tmp_path, 1, configure=slurm_agents()) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            act = S.ActivitySpec(name="slow", shell=S.ShellSpec(cmd="sleep 600"), timeout_s=1)
            status, _ = await submit_and_watch(stub, [act])
    slow = by_name(status)["slow"]
    assert slow.state == S.ACTIVITY_STATE_FAILED
    assert slow.message.startswith("TIMEOUT: walltime exceeded"), slow.message
    assert slow.detail["reason"] == "TIMEOUT"
    assert scontrol_state(slow.detail["job_id"]) == "TIMEOUT"


PARSL_ON_SLURM = """
import json, os
from parsl import python_app
import zambeze_mesh.wf as zwf

@python_app
def where(x):
    import os
    return (x * x, os.environ.get("SLURM_JOB_ID", ""))

res = [where(i).result() for i in range(4)]
(zwf.output_dir() / "r.json").write_text(json.dumps(res))
"""


@pytest.mark.slow
async def test_parsl_workers_through_slurm_provider(tmp_path: Path, slurm_conf: str) -> None:
    pytest.importorskip("parsl")
    script = tmp_path / "p.py"
    script.write_text(PARSL_ON_SLURM)
    cfg = {
        "provider": "slurm",
        "partition": "debug",
        "walltime": "00:05:00",
        "max_workers_per_node": 2,
    }
    async with mesh(tmp_path, 1, configure=lambda i: {"slots": 2}) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            act = S.ActivitySpec(
                name="p",
                workflow=S.WorkflowSpec(
                    wf_manager="parsl", wf_uri=f"file://{script}", wf_config_json=json.dumps(cfg)
                ),
            )
            status, _ = await submit_and_watch(stub, [act])
    p = by_name(status)["p"]
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
    res = json.loads((Path(p.detail["output_dir"]) / "r.json").read_text())
    assert [r[0] for r in res] == [0, 1, 4, 9]
    assert all(r[1].isdigit() for r in res)  # the apps ran inside a Slurm job
