"""The gRPC implementation of the membership :class:`~zambeze_mesh.membership.transport.Transport`.

Requests go out over the agent's reused mTLS channels; incoming RPCs are handed to the
handler registered with :meth:`serve` by the ``Membership`` servicer.
"""

from __future__ import annotations

from typing import Any

import grpc

from zambeze_mesh.errors import Unavailable
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.membership import messages as m
from zambeze_mesh.membership.transport import Handler
from zambeze_mesh.transport.channels import ChannelPool
from zambeze_mesh.transport.membership_wire import from_pb, to_pb
from zambeze_mesh.v1 import membership_pb2_grpc


class GrpcTransport:
    """Sends membership messages as unary RPCs; one reused channel per peer."""

    def __init__(self, channels: ChannelPool, address: str) -> None:
        self._channels = channels
        self._address = address
        self._handler: Handler | None = None
        self.sent = 0
        self.sent_bytes = 0

    @property
    def address(self) -> str:
        """Our own advertised address."""
        return self._address

    async def request(self, address: str, msg: object, timeout: float) -> object | None:
        """Send ``msg`` to ``address``; return the reply message (None for one-way ones)."""
        stub = membership_pb2_grpc.MembershipStub(self._channels.get(address))
        pb: Any = to_pb(msg)  # type: ignore[arg-type]
        self.sent += 1
        self.sent_bytes += pb.ByteSize()
        call: Any
        if isinstance(msg, m.Ping):
            call = stub.Ping
        elif isinstance(msg, m.PingReq):
            call = stub.PingReq
        elif isinstance(msg, m.SyncRequest):
            call = stub.Sync
        elif isinstance(msg, m.Gossip):
            call = stub.Gossip
        elif isinstance(msg, m.Leave):
            call = stub.Leave
        else:
            raise TypeError(f"{type(msg).__name__} is not sent as a request")
        try:
            reply = await call(pb, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            raise Unavailable(f"{address}: {err}") from None
        if isinstance(msg, m.Gossip | m.Leave):
            return None
        return from_pb(reply)

    def serve(self, handler: Handler) -> None:
        """Register the function that answers incoming messages."""
        self._handler = handler

    async def handle(self, src: str, pb: object) -> object | None:
        """Called by the servicer: decode, hand to the handler, encode the reply."""
        if self._handler is None:
            raise Unavailable("membership is not running yet")
        reply = await self._handler(src, from_pb(pb))
        return None if reply is None else to_pb(reply)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Nothing to release: the channels belong to the agent."""
        self._handler = None
