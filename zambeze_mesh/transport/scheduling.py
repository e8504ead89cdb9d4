"""The Scheduling seam: the calls monitors and contractors make to each other.

A monitor's placement sends calls for proposals, awards and cancels to contractors; a
contractor's reporter streams its events back to monitors and reads their
acknowledgements. Both talk only to a :class:`SchedulingTransport`, addressed by agent
name. Three implementations carry the same messages with the same semantics:

* :class:`~zambeze_mesh.transport.scheduling_grpc.GrpcScheduling`: RPCs over the
  agent's mTLS channels (the callee learns the caller from its certificate);
* :class:`InProcessScheduling`: this agent's own contractor and monitor, called
  directly with this agent's name as the caller (so the callee applies the same
  authorization and monitor scoping as for a remote caller);
* :class:`MemorySchedulingNetwork`: several agents' handlers in one process, without
  sockets (tests, whole-mesh simulation); messages are copied as if serialized.

:class:`Routed` sends calls for this agent itself in-process and the rest remotely.
Every failure to reach or be answered by the callee raises a
:class:`~zambeze_mesh.errors.ZmeshError` (:class:`~zambeze_mesh.errors.Unavailable`
when it cannot be reached), never a transport-specific exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar, runtime_checkable

from zambeze_mesh.errors import Unavailable, ZmeshError
from zambeze_mesh.v1 import scheduling_pb2 as pb

log = logging.getLogger("zambeze_mesh.transport.scheduling")

T = TypeVar("T")


@runtime_checkable
class SchedulingHandler(Protocol):
    """What answers Scheduling calls on an agent, whatever carried them.

    ``caller`` is the authenticated name of the calling agent (from its certificate
    over gRPC; this agent's own name in-process). A handler checks that the request
    names its caller and scopes the work to it.
    """

    async def call_for_proposals(
        self, caller: str, req: pb.CallForProposalsRequest
    ) -> pb.CallForProposalsResponse:
        """A monitor asks for bids."""
        ...

    async def award(self, caller: str, req: pb.AwardRequest) -> pb.AwardResponse:
        """A monitor awards activities."""
        ...

    async def cancel(
        self, caller: str, req: pb.CancelActivitiesRequest
    ) -> pb.CancelActivitiesResponse:
        """A monitor cancels attempts it awarded."""
        ...

    async def report(self, caller: str, req: pb.ReportStatusRequest) -> pb.ReportStatusResponse:
        """A contractor reports events; the reply acknowledges them."""
        ...


class ReportLink(Protocol):
    """One open report stream from a contractor to a monitor.

    Requests go out in order without waiting; each is answered by one
    acknowledgement, in order, on :meth:`acks`. When the stream breaks, :meth:`send`
    and :meth:`acks` raise a ZmeshError; after :meth:`close`, :meth:`acks` ends.
    """

    async def send(self, req: pb.ReportStatusRequest) -> None:
        """Queue ``req`` on the stream (raises when the stream is broken)."""
        ...

    def acks(self) -> AsyncIterator[pb.ReportStatusResponse]:
        """The monitor's acknowledgements, in order."""
        ...

    def close(self) -> None:
        """Abandon the stream (what was not acknowledged must be sent again)."""
        ...


class SchedulingTransport(Protocol):
    """Scheduling calls to other agents (or this one), by agent name.

    The unary calls are *started* when the method is called (a gRPC call is on the
    wire before the caller's next step); the returned awaitable gives the reply or
    raises a ZmeshError (:class:`Unavailable` for an unknown or unreachable agent).
    """

    def call_for_proposals(
        self, to: str, req: pb.CallForProposalsRequest
    ) -> Awaitable[pb.CallForProposalsResponse]:
        """Ask ``to`` for bids."""
        ...

    def award(self, to: str, req: pb.AwardRequest) -> Awaitable[pb.AwardResponse]:
        """Award activities to ``to``."""
        ...

    def cancel(
        self, to: str, req: pb.CancelActivitiesRequest
    ) -> Awaitable[pb.CancelActivitiesResponse]:
        """Cancel attempts on ``to``."""
        ...

    def open_reports(self, to: str) -> ReportLink:
        """Open a report stream to the monitor ``to`` (raises Unavailable if unknown)."""
        ...


async def answered(call: Awaitable[T]) -> T:
    """Await a handler's answer the way an RPC would deliver it.

    A ZmeshError passes through (the RPC's status); anything else is the callee's
    bug: logged, and turned into an internal error as a servicer would.
    """
    try:
        return await call
    except ZmeshError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("scheduling handler failed")
        raise ZmeshError(f"internal error: {exc}") from None


async def _failing(exc: ZmeshError) -> Any:
    raise exc


def failed(exc: ZmeshError) -> Coroutine[Any, Any, Any]:
    """An awaitable that raises ``exc`` (a call that could not be started)."""
    return _failing(exc)


class QueueLink:
    """A report stream without a wire: requests are answered in order by a handler.

    ``deliver`` turns a request into the handler's acknowledgement (copying it, or
    checking reachability, is up to the transport that builds the link).
    """

    def __init__(
        self,
        deliver: Callable[[pb.ReportStatusRequest], Awaitable[pb.ReportStatusResponse]],
        *,
        name: str = "report stream",
    ) -> None:
        self._deliver = deliver
        self._name = name
        self._requests: asyncio.Queue[pb.ReportStatusRequest] = asyncio.Queue()
        self._acks: asyncio.Queue[pb.ReportStatusResponse | ZmeshError | None] = asyncio.Queue()
        self._broken: ZmeshError | None = None
        self._closed = False
        self._worker = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        while True:
            req = await self._requests.get()
            try:
                resp = await self._deliver(req)
            except ZmeshError as exc:
                self._broken = exc
                self._acks.put_nowait(exc)
                return
            self._acks.put_nowait(resp)

    async def send(self, req: pb.ReportStatusRequest) -> None:
        """Queue ``req`` for the handler."""
        if self._closed:
            raise Unavailable(f"{self._name}: closed")
        if self._broken is not None:
            raise self._broken
        self._requests.put_nowait(req)

    async def acks(self) -> AsyncIterator[pb.ReportStatusResponse]:
        """Acknowledgements in request order; raises what broke the stream."""
        while True:
            item = await self._acks.get()
            if item is None:
                return
            if isinstance(item, ZmeshError):
                raise item
            yield item

    def close(self) -> None:
        """Stop answering; :meth:`acks` ends."""
        if self._closed:
            return
        self._closed = True
        self._worker.cancel()
        self._acks.put_nowait(None)


class InProcessScheduling:
    """Calls to this agent's own handler, with this agent's name as the caller.

    Each call runs when its awaitable is awaited (never inside the caller's current
    step), through the same handler methods the gRPC servicer uses.
    """

    def __init__(self, name: str, handler: SchedulingHandler) -> None:
        self.name = name
        self._handler = handler

    def _check(self, to: str) -> None:
        if to != self.name:
            raise Unavailable(f"{to}: not this agent ({self.name}); no remote transport")

    def call_for_proposals(
        self, to: str, req: pb.CallForProposalsRequest
    ) -> Awaitable[pb.CallForProposalsResponse]:
        """Ask this agent's contractor for bids."""
        self._check(to)
        return answered(self._handler.call_for_proposals(self.name, req))

    def award(self, to: str, req: pb.AwardRequest) -> Awaitable[pb.AwardResponse]:
        """Award to this agent's contractor."""
        self._check(to)
        return answered(self._handler.award(self.name, req))

    def cancel(
        self, to: str, req: pb.CancelActivitiesRequest
    ) -> Awaitable[pb.CancelActivitiesResponse]:
        """Cancel attempts on this agent's contractor."""
        self._check(to)
        return answered(self._handler.cancel(self.name, req))

    def open_reports(self, to: str) -> ReportLink:
        """A report stream to this agent's own monitor."""
        self._check(to)
        handler, name = self._handler, self.name

        def deliver(req: pb.ReportStatusRequest) -> Awaitable[pb.ReportStatusResponse]:
            return answered(handler.report(name, req))

        return QueueLink(deliver, name=f"report stream to {to}")


class Routed:
    """Calls for this agent go in-process; the others go to the remote transport."""

    def __init__(self, name: str, local: SchedulingTransport, remote: SchedulingTransport) -> None:
        self.name = name
        self.local = local
        self.remote = remote

    def _pick(self, to: str) -> SchedulingTransport:
        return self.local if to == self.name else self.remote

    def call_for_proposals(
        self, to: str, req: pb.CallForProposalsRequest
    ) -> Awaitable[pb.CallForProposalsResponse]:
        """Ask ``to`` for bids."""
        return self._pick(to).call_for_proposals(to, req)

    def award(self, to: str, req: pb.AwardRequest) -> Awaitable[pb.AwardResponse]:
        """Award activities to ``to``."""
        return self._pick(to).award(to, req)

    def cancel(
        self, to: str, req: pb.CancelActivitiesRequest
    ) -> Awaitable[pb.CancelActivitiesResponse]:
        """Cancel attempts on ``to``."""
        return self._pick(to).cancel(to, req)

    def open_reports(self, to: str) -> ReportLink:
        """A report stream to the monitor ``to``."""
        return self._pick(to).open_reports(to)


M = TypeVar("M", bound=Any)


def _copy(msg: M) -> M:
    """The message as the other end would decode it."""
    return type(msg).FromString(msg.SerializeToString())


class MemorySchedulingNetwork:
    """Several agents' Scheduling handlers in one process, connected without sockets.

    Every message is serialized and parsed again (as on the wire), the callee sees
    the caller's name, an agent nobody serves is unreachable, and :meth:`cut` severs
    the link between two agents (calls raise Unavailable, open streams break).
    """

    def __init__(self) -> None:
        self._handlers: dict[str, SchedulingHandler] = {}
        self._cut: set[frozenset[str]] = set()

    def serve(self, name: str, handler: SchedulingHandler) -> None:
        """Answer calls to ``name`` with ``handler``."""
        if name in self._handlers:
            raise Unavailable(f"{name}: already served")
        self._handlers[name] = handler

    def unserve(self, name: str) -> None:
        """``name`` goes away: calls to it are refused."""
        self._handlers.pop(name, None)

    def cut(self, a: str, b: str) -> None:
        """Sever the link between ``a`` and ``b``."""
        self._cut.add(frozenset((a, b)))

    def heal(self) -> None:
        """Restore every link."""
        self._cut.clear()

    def handler(self, src: str, dst: str) -> SchedulingHandler:
        """The handler serving ``dst`` as seen from ``src`` (raises Unavailable)."""
        if frozenset((src, dst)) in self._cut:
            raise Unavailable(f"{dst}: unreachable from {src}")
        h = self._handlers.get(dst)
        if h is None:
            raise Unavailable(f"{dst}: unknown or not serving")
        return h

    def transport(self, name: str) -> MemoryScheduling:
        """The transport the agent ``name`` calls others with."""
        return MemoryScheduling(self, name)


class MemoryScheduling:
    """One agent's end of a :class:`MemorySchedulingNetwork`."""

    def __init__(self, network: MemorySchedulingNetwork, name: str) -> None:
        self._net = network
        self.name = name

    async def _call(self, to: str, method: str, req: Any) -> Any:
        await asyncio.sleep(0)  # never inside the caller's step, like a real call
        handler = self._net.handler(self.name, to)
        resp = await answered(getattr(handler, method)(self.name, _copy(req)))
        self._net.handler(self.name, to)  # the reply is lost if the link went down
        return _copy(resp)

    def call_for_proposals(
        self, to: str, req: pb.CallForProposalsRequest
    ) -> Awaitable[pb.CallForProposalsResponse]:
        """Ask ``to`` for bids."""
        return self._call(to, "call_for_proposals", req)

    def award(self, to: str, req: pb.AwardRequest) -> Awaitable[pb.AwardResponse]:
        """Award activities to ``to``."""
        return self._call(to, "award", req)

    def cancel(
        self, to: str, req: pb.CancelActivitiesRequest
    ) -> Awaitable[pb.CancelActivitiesResponse]:
        """Cancel attempts on ``to``."""
        return self._call(to, "cancel", req)

    def open_reports(self, to: str) -> ReportLink:
        """A report stream to the monitor ``to``."""
        self._net.handler(self.name, to)  # unknown or cut: refused now

        async def deliver(req: pb.ReportStatusRequest) -> pb.ReportStatusResponse:
            return await self._call(to, "report", req)

        return QueueLink(deliver, name=f"report stream {self.name} -> {to}")
