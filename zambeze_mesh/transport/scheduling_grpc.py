"""The gRPC implementation of the Scheduling seam (see :mod:`.scheduling`).

Calls go out on the agent's reused mTLS channels to the address membership knows for
the callee; the callee's servicer learns the caller from its certificate. gRPC errors
come back as the matching :class:`~zambeze_mesh.errors.ZmeshError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from zambeze_mesh.errors import Unavailable, ZmeshError
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.transport.scheduling import ReportLink, failed
from zambeze_mesh.v1 import scheduling_pb2 as pb
from zambeze_mesh.v1 import scheduling_pb2_grpc

#: Deadline of the unary Scheduling calls.
RPC_TIMEOUT_S = 10.0

T = TypeVar("T")


class Channels(Protocol):
    """Where channels to peers come from (the agent's :class:`ChannelPool`)."""

    def get(self, address: str) -> grpc.aio.Channel:
        """The channel to ``address``."""
        ...


async def _reply(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


class GrpcLink:
    """One ``Scheduling.ReportStream`` call."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._closed = False

    async def send(self, req: pb.ReportStatusRequest) -> None:
        """Write ``req`` on the stream."""
        try:
            await self._call.write(req)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        except (asyncio.InvalidStateError, RuntimeError) as exc:
            raise Unavailable(f"report stream ended: {exc}") from None

    async def acks(self) -> AsyncIterator[pb.ReportStatusResponse]:
        """The acknowledgements; ends quietly after :meth:`close`."""
        try:
            async for resp in self._call:
                yield resp
        except grpc.RpcError as exc:
            if self._closed and exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(exc) from None
        except asyncio.CancelledError:
            # grpc.aio raises this for a call cancelled by close(); a cancelled task
            # (cancelling() > 0) still gets its CancelledError.
            task = asyncio.current_task()
            if self._closed and (task is None or not task.cancelling()):
                return
            raise

    def close(self) -> None:
        """Cancel the call."""
        self._closed = True
        self._call.cancel()


class GrpcScheduling:
    """Scheduling calls as gRPC, to the address ``resolve`` gives for an agent name."""

    def __init__(
        self,
        channels: Channels,
        resolve: Callable[[str], str | None],
        *,
        timeout: float = RPC_TIMEOUT_S,
    ) -> None:
        self._channels = channels
        self._resolve = resolve
        self.timeout = timeout

    def _stub(self, to: str) -> scheduling_pb2_grpc.SchedulingStub:
        address = self._resolve(to)
        if address is None:
            raise Unavailable(f"{to}: unknown member")
        return scheduling_pb2_grpc.SchedulingStub(self._channels.get(address))

    def call_for_proposals(
        self, to: str, req: pb.CallForProposalsRequest
    ) -> Awaitable[pb.CallForProposalsResponse]:
        """Start ``CallForProposals`` now; await the bids."""
        try:
            stub = self._stub(to)
        except ZmeshError as exc:
            return failed(exc)
        return _reply(stub.CallForProposals(req, timeout=self.timeout))

    def award(self, to: str, req: pb.AwardRequest) -> Awaitable[pb.AwardResponse]:
        """Start ``Award`` now; await the decisions."""
        try:
            stub = self._stub(to)
        except ZmeshError as exc:
            return failed(exc)
        return _reply(stub.Award(req, timeout=self.timeout))

    def cancel(
        self, to: str, req: pb.CancelActivitiesRequest
    ) -> Awaitable[pb.CancelActivitiesResponse]:
        """Start ``Cancel`` now; await the count."""
        try:
            stub = self._stub(to)
        except ZmeshError as exc:
            return failed(exc)
        return _reply(stub.Cancel(req, timeout=self.timeout))

    def open_reports(self, to: str) -> ReportLink:
        """Open a ``ReportStream`` call to the monitor ``to``."""
        return GrpcLink(self._stub(to).ReportStream())
