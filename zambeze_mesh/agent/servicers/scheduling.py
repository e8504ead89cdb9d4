"""``Scheduling`` service: contract net (contractor side) and reports (monitor side)."""

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
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.agent.contractor import Contractor

MAX_ITEMS = 10_000


def _caller_name(claimed: str) -> str:
    caller = require_caller()
    name = caller.identity.name if caller.identity else ""
    if claimed != name:
        raise NotPermitted(f"request claims to come from {claimed!r} but the caller is {name!r}")
    return name


class SchedulingServicer(scheduling_pb2_grpc.SchedulingServicer):
    """Contract-net RPCs between monitors and contractors.

    Every call is scoped to the caller: ``monitor``/``contractor`` must name the
    caller's own certificate, a contractor's jobs are keyed by their monitor, and a
    monitor takes reports only from the contractor it awarded.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def _contractor(self) -> Contractor:
        if self.agent.contractor is None:
            raise Unavailable("the agent is still starting")
        return self.agent.contractor

    @rpc_errors
    async def CallForProposals(
        self, request: scheduling_pb2.CallForProposalsRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CallForProposalsResponse:
        _caller_name(request.monitor)
        if len(request.tenders) > MAX_ITEMS:
            raise InvalidInput(f"too many tenders ({len(request.tenders)} > {MAX_ITEMS})")
        bids = self._contractor().bids(request)
        return scheduling_pb2.CallForProposalsResponse(
            bidder=self.agent.name, bids=[bid_to_pb(b) for b in bids]
        )

    @rpc_errors
    async def Award(
        self, request: scheduling_pb2.AwardRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.AwardResponse:
        _caller_name(request.monitor)
        if len(request.items) > MAX_ITEMS:
            raise InvalidInput(f"too many award items ({len(request.items)} > {MAX_ITEMS})")
        return scheduling_pb2.AwardResponse(
            contractor=self.agent.name, decisions=self._contractor().award(request)
        )

    @rpc_errors
    async def ReportStatus(
        self, request: scheduling_pb2.ReportStatusRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ReportStatusResponse:
        return await self._report(request)

    async def _report(
        self, request: scheduling_pb2.ReportStatusRequest
    ) -> scheduling_pb2.ReportStatusResponse:
        contractor = _caller_name(request.contractor)
        if len(request.events) > MAX_ITEMS:
            raise InvalidInput(f"too many events ({len(request.events)} > {MAX_ITEMS})")
        monitor = self.agent.monitor
        if monitor is None:
            raise Unavailable("the agent is still starting")
        await monitor.report(contractor, [e.event for e in request.events])
        return scheduling_pb2.ReportStatusResponse(acked=[e.outbox_seq for e in request.events])

    @rpc_errors
    async def ReportStream(
        self,
        request_iterator: AsyncIterator[scheduling_pb2.ReportStatusRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[scheduling_pb2.ReportStatusResponse]:
        async for request in request_iterator:
            yield await self._report(request)

    @rpc_errors
    async def Cancel(
        self, request: scheduling_pb2.CancelActivitiesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CancelActivitiesResponse:
        monitor = _caller_name(request.monitor)
        if len(request.activities) > MAX_ITEMS:
            raise InvalidInput(f"too many activities ({len(request.activities)} > {MAX_ITEMS})")
        n = await self._contractor().cancel(list(request.activities), monitor)
        return scheduling_pb2.CancelActivitiesResponse(cancelled=n)
