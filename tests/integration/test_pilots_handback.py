"""Handing an attempt back (what a draining pilot does) re-offers it without a failure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from tests.helpers.inproc import mesh
from tests.integration.test_campaigns_e2e import by_name
from zambeze_mesh.scheduling import TenderKey
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2


async def test_handed_back_attempt_is_reoffered_not_failed(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2, labels=[{}, {"pool": "x"}]) as agents:
        worker = agents[1]
        assert worker.contractor is not None
        act = S.ActivitySpec(
            name="h",
            shell=S.ShellSpec(cmd="sleep 3; echo fine"),
            requires=S.Requirements(labels={"pool": "x"}),
            retries=0,
        )
        events = []
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="c", activities=[act]))
            handed = False
            async with asyncio.timeout(60):
                watch = stub.Watch(
                    campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
                )
                async for ev in watch:
                    events.append(ev)
                    if ev.state == S.ACTIVITY_STATE_RUNNING and not handed:
                        handed = True
                        key = TenderKey(resp.campaign_id, "h", ev.attempt)
                        job = (agents[0].name, key)
                        assert await worker.contractor.hand_back(job, "walltime near")
            status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
    h = by_name(status)["h"]
    assert h.attempt == 2 and h.detail["stdout_tail"].strip() == "fine"
    assert not [e for e in events if e.state == S.ACTIVITY_STATE_FAILED]
    retrying = [e for e in events if e.state == S.ACTIVITY_STATE_RETRYING]
    assert len(retrying) == 1 and "handed back" in retrying[0].message
