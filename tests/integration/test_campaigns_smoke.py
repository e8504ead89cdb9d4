"""Campaigns over the raw gRPC API against a real in-process mesh."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.helpers.inproc import mesh
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2


def shell(name: str, cmd: str, **kw: object) -> common_pb2.ActivitySpec:
    return common_pb2.ActivitySpec(name=name, shell=common_pb2.ShellSpec(cmd=cmd), **kw)


async def run(stub: campaigns_pb2_grpc.CampaignsStub, acts: list[common_pb2.ActivitySpec]):
    resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="t", activities=acts))
    events = []
    async for ev in stub.Watch(
        campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
    ):
        events.append(ev)
    status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
    return status, events


async def test_independent_shell_activities_complete(tmp_path: Path) -> None:
    async with mesh(tmp_path, 3) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [shell(f"a{i}", f"echo hello {i} > $ZMESH_OUTPUT_DIR/out.txt") for i in range(6)]
            acts.append(shell("last", "echo done", depends_on=[f"a{i}" for i in range(6)]))
            status, events = await run(stub, acts)
    assert status.state == common_pb2.CAMPAIGN_STATE_SUCCEEDED, status
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(a.state == common_pb2.ACTIVITY_STATE_SUCCEEDED for a in status.activities)


@pytest.mark.parametrize("bad", ["cycle", "unknown", "empty"])
async def test_bad_campaigns_rejected(tmp_path: Path, bad: str) -> None:
    async with mesh(tmp_path, 1) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            if bad == "cycle":
                acts = [shell("x", "true", depends_on=["y"]), shell("y", "true", depends_on=["x"])]
            elif bad == "unknown":
                acts = [shell("x", "true", depends_on=["nope"])]
            else:
                acts = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Submit(campaigns_pb2.SubmitRequest(name="t", activities=acts))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            listed = await stub.ListCampaigns(campaigns_pb2.ListCampaignsRequest())
            assert not listed.campaigns
