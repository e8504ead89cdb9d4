"""``Scheduling`` service: contract net (contractor side) and reports (monitor side).

:class:`SchedulingService` answers the calls whatever carries them (the gRPC servicer
below, or the in-process and in-memory transports of
:mod:`zambeze_mesh.transport.scheduling`); the servicer only adds the caller's name
from its certificate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from zambeze_mesh.agent.campaign_wire import bid_to_pb
from zambeze_mesh.agent.servicers.errors import rpc_errors
from zambeze_mesh.errors import InvalidInput, NotPermitted, Unavailable
from zambeze_mesh.security.authz import require_caller
from zambeze_mesh.v1 import scheduling_pb2, scheduling_pb2_grpc

if TYPE_CHECKING:
    from zambeze_mesh.agent.contractor import Contractor
    from zambeze_mesh.agent.monitor import Monitor
    from zambeze_mesh.agent.servicers.streams import ServedStreams

MAX_ITEMS = 10_000


def _claimed(claimed: str, caller: str) -> str:
    if claimed != caller:
        raise NotPermitted(f"request claims to come from {claimed!r} but the caller is {caller!r}")
    return caller


def _limit(what: str, n: int) -> None:
    if n > MAX_ITEMS:
        raise InvalidInput(f"too many {what} ({n} > {MAX_ITEMS})")


class SchedulingService:
    """Contract-net calls between monitors and contractors, scoped to the caller.

    ``caller`` is the authenticated calling agent. ``monitor``/``contractor`` in a
    request must name it, a contractor's jobs are keyed by their monitor, and a
    monitor takes reports only from the contractor it awarded. The contractor and
    monitor are attached once built (calls before that are refused as unavailable).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._contractor: Contractor | None = None
        self._monitor: Monitor | None = None

    def attach(self, contractor: Contractor, monitor: Monitor) -> None:
        """Start answering with these (the agent's services are up)."""
        self._contractor = contractor
        self._monitor = monitor

    def _c(self) -> Contractor:
        if self._contractor is None:
            raise Unavailable("the agent is still starting")
        return self._contractor

    async def call_for_proposals(
        self, caller: str, req: scheduling_pb2.CallForProposalsRequest
    ) -> scheduling_pb2.CallForProposalsResponse:
        """One bid or refusal per tender."""
        _claimed(req.monitor, caller)
        _limit("tenders", len(req.tenders))
        bids = self._c().bids(req)
        return scheduling_pb2.CallForProposalsResponse(
            bidder=self.name, bids=[bid_to_pb(b) for b in bids]
        )

    async def award(
        self, caller: str, req: scheduling_pb2.AwardRequest
    ) -> scheduling_pb2.AwardResponse:
        """Accept or refuse each awarded activity."""
        _claimed(req.monitor, caller)
        _limit("award items", len(req.items))
        return scheduling_pb2.AwardResponse(contractor=self.name, decisions=self._c().award(req))

    async def cancel(
        self, caller: str, req: scheduling_pb2.CancelActivitiesRequest
    ) -> scheduling_pb2.CancelActivitiesResponse:
        """Stop the caller's matching attempts."""
        monitor = _claimed(req.monitor, caller)
        _limit("activities", len(req.activities))
        n = await self._c().cancel(list(req.activities), monitor)
        return scheduling_pb2.CancelActivitiesResponse(cancelled=n)

    async def report(
        self, caller: str, req: scheduling_pb2.ReportStatusRequest
    ) -> scheduling_pb2.ReportStatusResponse:
        """Journal a contractor's events; acknowledge them once journaled."""
        contractor = _claimed(req.contractor, caller)
        _limit("events", len(req.events))
        if self._monitor is None:
            raise Unavailable("the agent is still starting")
        await self._monitor.report(contractor, [e.event for e in req.events])
        return scheduling_pb2.ReportStatusResponse(acked=[e.outbox_seq for e in req.events])


def _caller() -> str:
    caller = require_caller()
    return caller.identity.name if caller.identity else ""


class SchedulingServicer(scheduling_pb2_grpc.SchedulingServicer):
    """The gRPC face of a :class:`SchedulingService`; ``streams`` ends its report
    streams when the agent stops."""

    def __init__(self, service: SchedulingService, streams: ServedStreams) -> None:
        self.service = service
        self.streams = streams

    @rpc_errors
    async def CallForProposals(
        self, request: scheduling_pb2.CallForProposalsRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CallForProposalsResponse:
        return await self.service.call_for_proposals(_caller(), request)

    @rpc_errors
    async def Award(
        self, request: scheduling_pb2.AwardRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.AwardResponse:
        return await self.service.award(_caller(), request)

    @rpc_errors
    async def ReportStatus(
        self, request: scheduling_pb2.ReportStatusRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ReportStatusResponse:
        # Agents report on ReportStream; this unary form stays for other clients.
        return await self.service.report(_caller(), request)

    @rpc_errors
    async def ReportStream(
        self,
        request_iterator: AsyncIterator[scheduling_pb2.ReportStatusRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[scheduling_pb2.ReportStatusResponse]:
        caller = _caller()
        async for request in self.streams.serve(request_iterator):
            yield await self.service.report(caller, request)

    @rpc_errors
    async def Cancel(
        self, request: scheduling_pb2.CancelActivitiesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CancelActivitiesResponse:
        return await self.service.cancel(_caller(), request)
