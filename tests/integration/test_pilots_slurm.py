"""Pilot agents as real Slurm jobs: submit, join, serve, drain, leave.

Uses the suite's single-node Slurm (see ``test_exec_slurm.slurm_conf``). Each pilot
job takes one CPU of the node and runs a real agent process that joins the
in-process mesh through its submitting agent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from tests.helpers.inproc import mesh, wait_until
from tests.helpers.ports import free_port_pair
from tests.integration.test_campaigns_e2e import by_name, submit_and_watch
from tests.integration.test_exec_slurm import scontrol_state, slurm_conf  # noqa: F401
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.agent.join import join_mesh
from zambeze_mesh.cli.main import main as zmesh
from zambeze_mesh.errors import Unauthenticated
from zambeze_mesh.pilots import jobs
from zambeze_mesh.pilots.tokens import create_pilot_token
from zambeze_mesh.settings.home import Home
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
pytest.importorskip("psij")


def submitter(i: int) -> dict[str, object]:
    return {"slots": 1, "scheduler": "slurm", "walltime": "5", "zeroconf": False}


def squeue_ids() -> set[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10
    ).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def member_status(agent: Agent, name: str) -> str:
    assert agent.gossip is not None
    for m in agent.gossip.members():
        if m.name == name:
            return m.status
    return ""


async def cli(*args: str) -> int:
    return await asyncio.to_thread(zmesh, list(args))


async def submit(agent: Agent, *args: str) -> jobs.PilotRow:
    home = str(agent.home.root)
    assert await cli("--home", home, "pilot", "submit", *args) == 0
    store = open_store(agent.home)
    try:
        return jobs.list_rows(store)[-1]
    finally:
        store.close()


async def pilot_ls(agent: Agent, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert await cli("--home", str(agent.home.root), "pilot", "ls", "--json") == 0
    out: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return out


def short(name: str, pilot: str, cmd: str) -> S.ActivitySpec:
    return S.ActivitySpec(
        name=name,
        shell=S.ShellSpec(cmd=cmd),
        requires=S.Requirements(labels={"pilot": pilot}),
    )


@pytest.mark.usefixtures("slurm_conf")
async def test_pilot_submit_serves_campaign_then_cancel_leaves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with mesh(tmp_path, 1, configure=submitter) as agents:
        agent = agents[0]
        row = await submit(agent, "--walltime", "10", "--slots", "2", "--label", "team=t")
        assert row.name == f"agent-0-pilot-{row.job_id}"
        assert row.job_id in squeue_ids()
        token_file = row.dir / "token"
        await wait_until(lambda: member_status(agent, row.name) == "alive", 90, "pilot alive")
        assert not token_file.exists()  # read once by the pilot, then deleted
        rec = agent.gossip.record_of(row.name) if agent.gossip else None
        assert rec is not None
        labels = dict(rec.capabilities.labels)
        assert labels == {
            "team": "t",
            "pilot": row.name,
            "scheduler": "slurm",
            "allocation": row.job_id,
            "pilot_outputs": "return",
        }
        assert rec.capabilities.slots == 2
        [listed] = await pilot_ls(agent, capsys)
        assert listed["name"] == row.name and listed["job_id"] == row.job_id
        assert listed["scheduler_state"] == "ACTIVE" and listed["mesh_state"] == "alive"
        assert isinstance(listed["time_left_s"], int) and 0 < listed["time_left_s"] <= 600
        # The pilot sees itself and its submitter alive too (its own agent socket).
        assert row.pilot_state()["mesh"] == "alive"
        pilot_home = row.dir / f"home-{row.job_id}"
        capsys.readouterr()
        assert await cli("--home", str(pilot_home), "members", "--json") == 0
        view = {m["name"]: m["status"] for m in json.loads(capsys.readouterr().out)}
        assert view == {"agent-0": "alive", row.name: "alive"}

        acts = [short(f"a{i}", row.name, f"echo {i}") for i in range(200)]
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            status, _ = await submit_and_watch(stub, acts)
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
        done = by_name(status)
        assert {a.agent for a in done.values()} == {row.name}
        assert done["a7"].detail["stdout_tail"].strip() == "7"

        assert await cli("--home", str(agent.home.root), "pilot", "cancel", row.name) == 0
        assert member_status(agent, row.name) in ("left", "")
        await wait_until(lambda: member_status(agent, row.name) == "left", 30, "pilot left")
        assert row.job_id not in squeue_ids()
        assert scontrol_state(row.job_id) in ("COMPLETED", "CANCELLED")
        assert row.pilot_state()["reason"] == "drained"
        [listed] = await pilot_ls(agent, capsys)
        assert listed["mesh_state"] == "left" and listed["state"] == "cancelled"
        capsys.readouterr()
        assert await cli("--home", str(agent.home.root), "pilot", "events", "--json") == 0
        evs = json.loads(capsys.readouterr().out)
        assert [(e["kind"], e["pilot"]) for e in evs] == [
            ("submitted", row.name),
            ("cancel", row.name),
            ("cancelled", row.name),
        ]


async def test_pilot_token_is_single_use_and_scoped(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1, configure=lambda i: {"zeroconf": False}) as agents:
        agent = agents[0]
        store = open_store(agent.home)
        try:
            token = create_pilot_token(store, "agent-0-pilot-", 60)
        finally:
            store.close()

        async def join(name: str) -> None:
            await join_mesh(
                Home(tmp_path / name),
                agent.address,
                token,
                name=name,
                listen=f"127.0.0.1:{free_port_pair()}",
            )

        with pytest.raises(Unauthenticated, match="only admits names agent-0-pilot-"):
            await join("intruder")
        await join("agent-0-pilot-42")
        with pytest.raises(Unauthenticated, match="already used"):
            await join("agent-0-pilot-43")


async def watch_campaign(
    stub: campaigns_pb2_grpc.CampaignsStub,
    acts: list[S.ActivitySpec],
    on_event: object = None,
) -> tuple[campaigns_pb2.CampaignStatus, list[S.Event]]:
    """Submit ``acts`` and follow the campaign to its end, calling ``on_event(ev)``."""
    resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="p", activities=acts))
    events = []
    async for ev in stub.Watch(
        campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
    ):
        events.append(ev)
        if on_event is not None:
            await on_event(ev)  # type: ignore[operator]
    status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
    return status, events


def pool(name: str, cmd: str, value: str) -> S.ActivitySpec:
    return S.ActivitySpec(
        name=name, shell=S.ShellSpec(cmd=cmd), requires=S.Requirements(labels={"pool": value})
    )


@pytest.mark.usefixtures("slurm_conf")
async def test_scancel_mid_activity_is_reawarded_elsewhere(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1, configure=submitter) as agents:
        agent = agents[0]
        p1 = await submit(agent, "--walltime", "10", "--slots", "1", "--label", "pool=k")
        p2 = await submit(agent, "--walltime", "10", "--slots", "1", "--label", "pool=k")
        for p in (p1, p2):
            await wait_until(lambda p=p: member_status(agent, p.name) == "alive", 90, p.name)
        killed: dict[str, str] = {}

        async def kill_first_running(ev: S.Event) -> None:
            if ev.state == S.ACTIVITY_STATE_RUNNING and not killed:
                victim = p1 if ev.agent == p1.name else p2
                killed[ev.activity] = victim.name
                await asyncio.to_thread(
                    subprocess.run, ["scancel", victim.job_id], check=True, timeout=10
                )

        acts = [pool(f"s{i}", "sleep 4; echo done", "k") for i in range(4)]
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            async with asyncio.timeout(180):
                status, events = await watch_campaign(stub, acts, kill_first_running)
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
        [(act, victim)] = killed.items()
        done = by_name(status)
        survivor = p2.name if victim == p1.name else p1.name
        assert done[act].agent == survivor and done[act].attempt >= 2
        assert all(a.detail["stdout_tail"].strip() == "done" for a in done.values())
        assert not [e for e in events if e.state == S.ACTIVITY_STATE_FAILED]
        await wait_until(
            lambda: member_status(agent, victim) in ("left", "dead"), 30, "victim gone"
        )
        victim_job = p1.job_id if victim == p1.name else p2.job_id
        assert scontrol_state(victim_job) == "CANCELLED"
        for p in (p1, p2):
            await cli("--home", str(agent.home.root), "pilot", "cancel", p.name)


@pytest.mark.slow
@pytest.mark.usefixtures("slurm_conf")
async def test_walltime_pilot_drains_and_leaves_before_slurm_kills_it(tmp_path: Path) -> None:
    # A 2-minute pilot and 20 s activities: it takes only what finishes 15 s before
    # its walltime, hands back the rest and leaves; a second, longer pilot finishes.
    async with mesh(tmp_path, 1, configure=submitter) as agents:
        agent = agents[0]
        p1 = await submit(agent, "--walltime", "2", "--slots", "2", "--label", "pool=w")
        await wait_until(lambda: member_status(agent, p1.name) == "alive", 90, "pilot 1")
        second: list[jobs.PilotRow] = []

        async def later(ev: S.Event) -> None:
            started = p1.pilot_state().get("started", time.time())
            if not second and time.time() - started > 60:
                second.append(
                    await submit(agent, "--walltime", "4", "--slots", "2", "--label", "pool=w")
                )

        acts = [pool(f"w{i}", "sleep 20", "w") for i in range(14)]
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            async with asyncio.timeout(400):
                status, events = await watch_campaign(stub, acts, later)
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
        assert not [e for e in events if e.state == S.ACTIVITY_STATE_FAILED]
        ran_on = {a.agent for a in status.activities}
        assert p1.name in ran_on
        await wait_until(lambda: member_status(agent, p1.name) == "left", 60, "pilot 1 left")
        st = p1.pilot_state()
        assert st["reason"] == "walltime"
        assert st["left"] - st["started"] < 120
        for _ in range(60):
            if scontrol_state(p1.job_id) not in ("RUNNING", "COMPLETING", "PENDING"):
                break
            await asyncio.sleep(1)
        assert scontrol_state(p1.job_id) == "COMPLETED"
        for p in second:
            await cli("--home", str(agent.home.root), "pilot", "cancel", p.name)


def autoscaled(i: int) -> dict[str, object]:
    return {
        **submitter(i),
        "pilots": {
            "max": 2,
            "walltime": "5",
            "slots": 1,
            "idle_timeout": 8,
            "backlog_wait": 1,
            "labels": {"pool": "auto"},
        },
    }


@pytest.mark.usefixtures("slurm_conf")
async def test_backlog_brings_up_pilots_that_leave_when_idle(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1, configure=autoscaled) as agents:
        agent = agents[0]
        assert agent.pilot_scaler is not None
        acts = [pool(f"b{i}", "sleep 2; echo ok", "auto") for i in range(6)]
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            async with asyncio.timeout(180):
                status, _ = await watch_campaign(stub, acts)
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
        store = open_store(agent.home)
        try:
            rows = jobs.list_rows(store)
        finally:
            store.close()
        assert 1 <= len(rows) <= 2
        assert agent.pilot_scaler.decisions and "waited" in agent.pilot_scaler.decisions[0].reason
        ran_on = {a.agent for a in status.activities}
        assert ran_on <= {r.name for r in rows}
        for r in rows:
            assert dict(r.labels) == {"pool": "auto"}
        # Backlog gone: after idle_timeout each pilot leaves and its job ends.
        for r in rows:
            await wait_until(
                lambda r=r: r.pilot_state().get("mesh") == "left", 60, f"{r.name} left"
            )
            assert r.pilot_state()["reason"] == "idle"
            await wait_until(lambda r=r: r.job_id not in squeue_ids(), 30, f"job {r.job_id} ended")
            assert scontrol_state(r.job_id) == "COMPLETED"
            assert member_status(agent, r.name) in ("left", "")
        store = open_store(agent.home)
        try:
            assert len(jobs.list_rows(store)) == len(rows)  # nothing more was submitted
            kinds = [e.kind for e in jobs.list_events(store)]
        finally:
            store.close()
        # Each decision shows as an event (`zmesh pilot events`), then the submissions.
        assert kinds[0] == "scale" and kinds.count("submitted") == len(rows)


@pytest.mark.usefixtures("slurm_conf")
async def test_outputs_of_a_pilot_stay_available_after_it_left(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1, configure=submitter) as agents:
        agent = agents[0]
        p = await submit(agent, "--walltime", "10", "--slots", "1")
        await wait_until(lambda: member_status(agent, p.name) == "alive", 90, "pilot alive")
        acts = [
            S.ActivitySpec(
                name="make",
                shell=S.ShellSpec(cmd="echo from-pilot > $ZMESH_OUTPUT_DIR/x.txt"),
                requires=S.Requirements(labels={"pilot": p.name}),
            ),
            S.ActivitySpec(name="gate", shell=S.ShellSpec(cmd="sleep 12"), agent="agent-0"),
            S.ActivitySpec(
                name="use",
                shell=S.ShellSpec(cmd='cat "$ZMESH_INPUT_0/x.txt"'),
                data_uris=["@output:make"],
                depends_on=["gate"],
                agent="agent-0",
            ),
        ]
        seen: dict[str, str] = {}

        async def leave_after_make(ev: S.Event) -> None:
            if ev.activity == "make" and ev.state == S.ACTIVITY_STATE_SUCCEEDED:
                assert await cli("--home", str(agent.home.root), "pilot", "cancel", p.name) == 0
            if ev.activity == "use" and ev.state in (
                S.ACTIVITY_STATE_AWARDED,
                S.ACTIVITY_STATE_QUEUED,
                S.ACTIVITY_STATE_STAGING,
                S.ACTIVITY_STATE_RUNNING,
                S.ACTIVITY_STATE_SUCCEEDED,
            ):  # its inputs were resolved when it was awarded
                seen.setdefault("pilot_at_use", member_status(agent, p.name))

        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            async with asyncio.timeout(180):
                status, _ = await watch_campaign(stub, acts, leave_after_make)
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
        done = by_name(status)
        assert done["make"].agent == p.name
        assert seen["pilot_at_use"] == "left"  # the producer was gone when it was staged
        assert done["use"].detail["stdout_tail"].strip() == "from-pilot"
