"""``Campaigns`` service: the client API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from zambeze_mesh.agent.servicers.errors import not_built, rpc_errors
from zambeze_mesh.errors import Unavailable
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent

_WHY = "campaign execution"

STATUS = {
    "alive": common_pb2.MEMBER_STATUS_ALIVE,
    "suspect": common_pb2.MEMBER_STATUS_SUSPECT,
    "dead": common_pb2.MEMBER_STATUS_DEAD,
    "left": common_pb2.MEMBER_STATUS_LEFT,
}


class CampaignsServicer(campaigns_pb2_grpc.CampaignsServicer):
    """Submit, follow and inspect campaigns; list members."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    Submit = not_built("Campaigns.Submit", _WHY)
    Get = not_built("Campaigns.Get", _WHY)
    Watch = not_built("Campaigns.Watch", _WHY)
    Cancel = not_built("Campaigns.Cancel", _WHY)
    ListCampaigns = not_built("Campaigns.ListCampaigns", _WHY)

    @rpc_errors
    async def ListMembers(
        self, request: campaigns_pb2.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListMembersResponse:
        gossip = self.agent.gossip
        if gossip is None:
            raise Unavailable("membership is not running yet")
        resp = campaigns_pb2.ListMembersResponse(self=self.agent.name, mesh=self.agent.mesh)
        for m in gossip.members():
            member = resp.members.add(
                name=m.name,
                address=m.address,
                status=STATUS.get(m.status, common_pb2.MEMBER_STATUS_UNSPECIFIED),
                incarnation=m.incarnation,
                self=m.name == self.agent.name,
            )
            if m.record is not None:
                member.capabilities.CopyFrom(m.record.capabilities)
        return resp
