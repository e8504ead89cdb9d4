"""Campaign recovery with real agent processes: kill -9 of a contractor and of the monitor."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest

from tests.helpers.procs import ProcAgent, ProcMesh
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
pytestmark = pytest.mark.slow


def shell(name: str, cmd: str, **kw: object) -> S.ActivitySpec:
    return S.ActivitySpec(name=name, shell=S.ShellSpec(cmd=cmd), **kw)


def workers(procmesh: ProcMesh) -> tuple[ProcAgent, ProcAgent, ProcAgent]:
    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a, "--label", "role=worker")
    b.start()
    c = procmesh.join("c", a, "--label", "role=worker")
    c.start()

    def ready() -> bool:
        return all(
            set(x.statuses().values()) == {"alive"} and len(x.statuses()) == 3 for x in (a, b, c)
        )

    procmesh.wait_for(ready, 30, "mesh of three")
    return a, b, c


def outbox_len(agent: ProcAgent) -> int:
    db = sqlite3.connect(agent.home / "zmesh.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


WORKER = S.Requirements(labels={"role": "worker"})


async def test_contractor_killed_activity_reawarded(procmesh: ProcMesh, tmp_path: Path) -> None:
    a, _, _ = workers(procmesh)
    attempts = tmp_path / "attempts"
    cmd = f"echo $ZMESH_ATTEMPT >> {attempts}; sleep 4; echo ok > $ZMESH_OUTPUT_DIR/x"
    async with grpc.aio.insecure_channel(f"unix:{a.home / 'agent.sock'}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        resp = await stub.Submit(
            campaigns_pb2.SubmitRequest(name="k", activities=[shell("long", cmd, requires=WORKER)])
        )
        cid = resp.campaign_id
        events: list[S.Event] = []
        victim = ""
        async for ev in stub.Watch(campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)):
            events.append(ev)
            if ev.state == S.ACTIVITY_STATE_RUNNING and not victim:
                victim = ev.agent
                # kill only once attempt 1 has really started its work
                procmesh.wait_for(
                    lambda: attempts.exists() and attempts.read_text().strip() != "",
                    20,
                    "attempt 1 to start",
                )
                procmesh.agents[victim].kill9()
        status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
        act = status.activities[0]
        assert act.attempt == 2 and act.agent != victim
        assert any(e.state == S.ACTIVITY_STATE_RETRYING for e in events)
        # The killed contractor comes back and reports its lost attempt 1: ignored.
        procmesh.agents[victim].start()
        procmesh.wait_for(
            lambda: outbox_len(procmesh.agents[victim]) == 0,
            30,
            "the restarted contractor to flush its outbox",
        )
        again = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
        assert again.state == S.CAMPAIGN_STATE_SUCCEEDED
        assert again.activities[0].attempt == 2
        assert again.last_seq == status.last_seq
    assert attempts.read_text().split() == ["1", "2"]


async def test_monitor_killed_and_restarted_continues(procmesh: ProcMesh, tmp_path: Path) -> None:
    a, _, _ = workers(procmesh)
    runs = tmp_path / "runs"
    acts = []
    for i in range(5):
        cmd = f"echo s{i} >> {runs}; sleep 1"
        acts.append(shell(f"s{i}", cmd, requires=WORKER, depends_on=[f"s{i - 1}"] if i else []))
    seen: list[S.Event] = []
    async with grpc.aio.insecure_channel(f"unix:{a.home / 'agent.sock'}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="m", activities=acts))
        cid = resp.campaign_id
        try:
            async for ev in stub.Watch(campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)):
                seen.append(ev)
                if ev.activity == "s1" and ev.state == S.ACTIVITY_STATE_RUNNING:
                    a.kill9()
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    await asyncio.sleep(1.0)
    a.start()
    async with grpc.aio.insecure_channel(f"unix:{a.home / 'agent.sock'}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        last = seen[-1].seq
        async for ev in stub.Watch(
            campaigns_pb2.WatchRequest(campaign_id=cid, after_seq=last, follow=True)
        ):
            seen.append(ev)
        status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
    seqs = [e.seq for e in seen]
    assert seqs == list(range(1, len(seqs) + 1)), "events lost or duplicated"
    lines = runs.read_text().split()
    assert sorted(set(lines)) == [f"s{i}" for i in range(5)]
    succeeded_twice = [s for s in set(lines) if lines.count(s) > 1]
    # s1 may have been re-run only if it had not succeeded; succeeded ones never run twice.
    assert all(s == "s1" for s in succeeded_twice), lines


async def test_function_worker_dies_with_its_agent(procmesh: ProcMesh, tmp_path: Path) -> None:
    """kill -9 of the contractor while a shipped function runs: its worker process is
    killed too (parent-death signal), it does not run on to the function's end."""
    import os

    import cloudpickle

    a, _, _ = workers(procmesh)
    pidfile = tmp_path / "worker.pid"

    def long_function(path: str) -> int:
        import os
        import time

        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
        return 0

    blob = cloudpickle.dumps((long_function, (str(pidfile),), {}))
    act = S.ActivitySpec(name="fn", python=S.PythonSpec(function=blob), requires=WORKER)
    async with grpc.aio.insecure_channel(f"unix:{a.home / 'agent.sock'}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="w", activities=[act]))
        async for ev in stub.Watch(
            campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
        ):
            if ev.state == S.ACTIVITY_STATE_RUNNING:
                victim = ev.agent
                break
        procmesh.wait_for(lambda: pidfile.exists() and pidfile.read_text() != "", 20, "the pid")
        pid = int(pidfile.read_text())
        procmesh.agents[victim].kill9()

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a zombie not yet reaped by init counts as gone
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] == "Z"

        procmesh.wait_for(gone, 10, "the worker to die with its agent")
        await stub.Cancel(campaigns_pb2.CancelCampaignRequest(campaign_id=resp.campaign_id))
