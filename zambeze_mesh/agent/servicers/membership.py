"""``Membership`` service: admission (Join), the SWIM messages (delegated to gossip),
revocations and pilot tokens for other agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from zambeze_mesh.agent.admission import Admission
from zambeze_mesh.agent.servicers.errors import rpc_errors
from zambeze_mesh.errors import FailedPrecondition, NotFound, NotPermitted, Unavailable
from zambeze_mesh.security.authz import require_caller
from zambeze_mesh.v1 import membership_pb2, membership_pb2_grpc

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.agent.gossip import Gossip


def _reply(reply: object | None, what: str) -> Any:
    """The membership machine's answer; a status (not an empty reply) when it had none."""
    if reply is None:
        raise Unavailable(f"{what}: no answer from the membership protocol in time")
    return reply


class MembershipServicer(membership_pb2_grpc.MembershipServicer):
    """Adapter from the Membership RPCs to :class:`Admission` and the gossip layer."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.admission = Admission(agent)

    def _gossip(self, claimed: str) -> Gossip:
        caller = require_caller()
        if caller.identity is None or caller.identity.name != claimed:
            raise NotPermitted(
                f"message claims to come from {claimed!r} but the caller's certificate says "
                f"{caller.identity.name if caller.identity else 'nobody'}"
            )
        gossip = self.agent.gossip
        if gossip is None:
            raise Unavailable("membership is not running yet")
        return gossip

    @rpc_errors
    async def Join(
        self, request: membership_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.JoinResponse:
        return await self.admission.join(request, require_caller(), context.peer())

    @rpc_errors
    async def Ping(
        self, request: membership_pb2.PingRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.Ack:
        gossip = self._gossip(getattr(request, "from"))
        if request.target and request.target != self.agent.name:
            raise NotFound(f"this is {self.agent.name!r}, not {request.target[:140]!r}")
        return _reply(await gossip.on_rpc(request), "Ping")

    @rpc_errors
    async def PingReq(
        self, request: membership_pb2.PingReqRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.Ack:
        gossip = self._gossip(getattr(request, "from"))
        return _reply(await gossip.on_rpc(request), "PingReq")

    @rpc_errors
    async def Gossip(
        self, request: membership_pb2.GossipRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.GossipResponse:
        gossip = self._gossip(getattr(request, "from"))
        await gossip.on_rpc(request)
        return membership_pb2.GossipResponse()

    @rpc_errors
    async def Sync(
        self, request: membership_pb2.SyncRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.SyncResponse:
        gossip = self._gossip(getattr(request, "from"))
        return _reply(await gossip.on_rpc(request), "Sync")

    @rpc_errors
    async def Leave(
        self, request: membership_pb2.LeaveRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.LeaveResponse:
        gossip = self._gossip(request.update.name)
        await gossip.on_rpc(request)
        return membership_pb2.LeaveResponse()

    @rpc_errors
    async def Revoke(
        self, request: membership_pb2.RevokeRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.RevokeResponse:
        caller = require_caller()
        revocations = self.agent.revocations
        if revocations is None:
            raise Unavailable("agent is not running")
        learned = revocations.learn(request.revocations, caller.name or "local operator")
        return membership_pb2.RevokeResponse(learned=learned)

    @rpc_errors
    async def PilotToken(
        self, request: membership_pb2.PilotTokenRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.PilotTokenResponse:
        from zambeze_mesh.pilots.grant import issue

        if self.agent.ca_locked:  # its pilot could not join: admission refuses too
            raise FailedPrecondition(
                "the CA key is locked: the operator must restart this agent with"
                " --ca-passphrase-file"
            )
        return issue(self.agent.require_store(), require_caller(), request)
