"""``Campaigns`` service: the client API (thin adapter over :class:`Monitor`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from zambeze_mesh.agent.servicers.errors import rpc_errors
from zambeze_mesh.errors import InvalidInput, Unavailable
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.agent.monitor import Monitor

STATUS = {
    "alive": common_pb2.MEMBER_STATUS_ALIVE,
    "suspect": common_pb2.MEMBER_STATUS_SUSPECT,
    "dead": common_pb2.MEMBER_STATUS_DEAD,
    "left": common_pb2.MEMBER_STATUS_LEFT,
}
MAX_ID = 64


def _cid(value: str) -> str:
    if not value or len(value) > MAX_ID:
        raise InvalidInput("campaign_id is required (at most 64 characters)")
    return value


class CampaignsServicer(campaigns_pb2_grpc.CampaignsServicer):
    """Submit, follow and inspect campaigns; list members."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def _monitor(self) -> Monitor:
        if self.agent.monitor is None:
            raise Unavailable("the agent is still starting")
        return self.agent.monitor

    @rpc_errors
    async def Submit(
        self, request: campaigns_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.SubmitResponse:
        cid = self._monitor().submit(request)
        return campaigns_pb2.SubmitResponse(campaign_id=cid, monitor=self.agent.name)

    @rpc_errors
    async def Get(
        self, request: campaigns_pb2.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.CampaignStatus:
        return self._monitor().status(_cid(request.campaign_id))

    @rpc_errors
    async def Watch(
        self, request: campaigns_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Event]:
        monitor = self._monitor()
        cid = _cid(request.campaign_id)
        async for ev in monitor.watch(cid, request.after_seq, request.follow):
            yield ev

    @rpc_errors
    async def WatchBatches(
        self, request: campaigns_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[campaigns_pb2.EventBatch]:
        monitor = self._monitor()
        cid = _cid(request.campaign_id)
        async for batch in monitor.watch_batches(cid, request.after_seq, request.follow):
            yield campaigns_pb2.EventBatch(events=batch)

    @rpc_errors
    async def Cancel(
        self, request: campaigns_pb2.CancelCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.CampaignStatus:
        return self._monitor().cancel(_cid(request.campaign_id))

    @rpc_errors
    async def ListCampaigns(
        self, request: campaigns_pb2.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListCampaignsResponse:
        limit = min(request.limit or 100, 1000)
        return campaigns_pb2.ListCampaignsResponse(campaigns=self._monitor().list(limit))

    @rpc_errors
    async def ListMembers(
        self, request: campaigns_pb2.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListMembersResponse:
        gossip = self.agent.gossip
        if gossip is None:
            raise Unavailable("membership is not running yet")
        resp = campaigns_pb2.ListMembersResponse(self_name=self.agent.name, mesh=self.agent.mesh)
        for m in gossip.members():
            member = resp.members.add(
                name=m.name,
                address=m.address,
                status=STATUS.get(m.status, common_pb2.MEMBER_STATUS_UNSPECIFIED),
                incarnation=m.incarnation,
                is_self=m.name == self.agent.name,
            )
            if m.record is not None:
                member.capabilities.CopyFrom(m.record.capabilities)
        return resp
