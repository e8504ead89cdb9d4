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
    from zambeze_mesh.agent.gossip import Gossip
    from zambeze_mesh.agent.revocations import Revocations
    from zambeze_mesh.store import Store


def _reply(reply: object | None, what: str) -> Any:
    """The membership machine's answer; a status (not an empty reply) when it had none."""
    if reply is None:
        raise Unavailable(f"{what}: no answer from the membership protocol in time")
    return reply


class MembershipServicer(membership_pb2_grpc.MembershipServicer):
    """Adapter from the Membership RPCs to :class:`Admission` and the gossip layer.

    Built from this agent's ``name``, its ``admission``, ``revocations`` and
    ``store`` (pilot tokens), and whether its CA key is locked (``ca_locked``: no
    pilot tokens then); membership is attached once it runs (SWIM messages before
    that are refused as unavailable).
    """

    def __init__(
        self,
        *,
        name: str,
        admission: Admission,
        revocations: Revocations,
        store: Store,
        ca_locked: bool,
    ) -> None:
        self.name = name
        self.admission = admission
        self.revocations = revocations
        self.store = store
        self.ca_locked = ca_locked
        self._gossip_service: Gossip | None = None

    def attach(self, gossip: Gossip) -> None:
        """Start answering SWIM messages with ``gossip``."""
        self._gossip_service = gossip

    def _gossip(self, claimed: str) -> Gossip:
        caller = require_caller()
        if caller.identity is None or caller.identity.name != claimed:
            raise NotPermitted(
                f"message claims to come from {claimed!r} but the caller's certificate says "
                f"{caller.identity.name if caller.identity else 'nobody'}"
            )
        gossip = self._gossip_service
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
        if request.target and request.target != self.name:
            raise NotFound(f"this is {self.name!r}, not {request.target[:140]!r}")
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
        learned = self.revocations.learn(request.revocations, caller.name or "local operator")
        return membership_pb2.RevokeResponse(learned=learned)

    @rpc_errors
    async def PilotToken(
        self, request: membership_pb2.PilotTokenRequest, context: grpc.aio.ServicerContext
    ) -> membership_pb2.PilotTokenResponse:
        from zambeze_mesh.pilots.grant import issue

        if self.ca_locked:  # its pilot could not join: admission refuses too
            raise FailedPrecondition(
                "the CA key is locked: the operator must restart this agent with"
                " --ca-passphrase-file"
            )
        return issue(self.store, require_caller(), request)
