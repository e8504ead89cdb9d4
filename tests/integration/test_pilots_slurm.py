"""Pilot agents as real Slurm jobs: submit, join, serve, drain, leave.

Uses the suite's single-node Slurm (see ``test_exec_slurm.slurm_conf``). Each pilot
job takes one CPU of the node and runs a real agent process that joins the
in-process mesh through its submitting agent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import grpc
import pytest

from tests.helpers.inproc import mesh, wait_until
from tests.helpers.ports import free_port_pair
from tests.integration.test_campaigns_e2e import by_name, submit_and_watch
from tests.integration.test_exec_slurm import scontrol_state, slurm_conf  # noqa: F401
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.agent.home import Home
from zambeze_mesh.agent.join import join_mesh
from zambeze_mesh.cli.main import main as zmesh
from zambeze_mesh.errors import Unauthenticated
from zambeze_mesh.pilots import jobs
from zambeze_mesh.pilots.tokens import create_pilot_token
from zambeze_mesh.v1 import campaigns_pb2_grpc, common_pb2

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
        }
        assert rec.capabilities.slots == 2
        [listed] = await pilot_ls(agent, capsys)
        assert listed["name"] == row.name and listed["job_id"] == row.job_id
        assert listed["scheduler_state"] == "ACTIVE" and listed["mesh_state"] == "alive"
        assert isinstance(listed["time_left_s"], int) and 0 < listed["time_left_s"] <= 600
        # The pilot sees itself and its submitter alive too.
        assert row.pilot_state()["mesh"] == "alive"

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
