"""A fast-failing agent does not swallow retries (no namespaces: in-process agents).

An agent whose activities fail at once looks idle, so it wins the next bid; a retry
must go to another agent that fits when there is one.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.helpers.inproc import mesh
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
WORKER = S.Requirements(labels={"role": "worker"})


async def test_retry_avoids_the_agent_that_failed_the_attempt(tmp_path: Path) -> None:
    """Injects: on worker agent-1 the activities' working dir cannot be created (a file
    stands in its path), so they fail there at once; on worker agent-2 they work;
    retries=1.

    Checks: the campaign SUCCEEDS; every RETRYING event follows an attempt on agent-1 and
    every final attempt ran on agent-2 (before the fix, retries could land on agent-1
    again and the campaign failed); Watch from 0 is seq 1..N.
    """
    labels = [{}, {"role": "worker"}, {"role": "worker"}]
    async with mesh(tmp_path, 3, labels=labels) as agents:
        (agents[1].data_dir / "blocked").write_text("a file where a directory should be")
        acts = [
            S.ActivitySpec(
                name=f"a{i}", shell=S.ShellSpec(cmd="true"), requires=WORKER, retries=1,
                working_dir=f"@agentdir/blocked/a{i}",
            )
            for i in range(8)
        ]  # fmt: skip
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="retry", activities=acts))
            cid = resp.campaign_id
            events = [
                ev
                async for ev in stub.Watch(campaigns_pb2.WatchRequest(campaign_id=cid, follow=True))
            ]
            status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
    for e in events:
        if e.state == S.ACTIVITY_STATE_RETRYING:
            assert e.agent == agents[1].name, e
    assert {a.agent for a in status.activities} == {agents[2].name}
