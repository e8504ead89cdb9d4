"""``Campaigns`` service: the client API (thin adapter over :class:`Monitor`).

Campaigns are owned (:mod:`zambeze_mesh.security.owners`): a caller that is not an
admin gets NOT_FOUND for another identity's campaign, exactly as for one that does
not exist, and does not see it in ListCampaigns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING

import grpc

from zambeze_mesh.agent.databrowse import DataBrowser, check_browse
from zambeze_mesh.agent.servicers.errors import rpc_errors
from zambeze_mesh.data.wire import info_to_pb
from zambeze_mesh.errors import InvalidInput, NotFound, Unavailable
from zambeze_mesh.membership.status import MemberStatus
from zambeze_mesh.security.authz import current_caller, require_caller
from zambeze_mesh.security.owners import Access
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2, data_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.gossip import Gossip
    from zambeze_mesh.agent.monitor import Monitor
    from zambeze_mesh.agent.servicers.streams import ServedStreams
    from zambeze_mesh.data.peers import LocalAgent
    from zambeze_mesh.store import Store

MAX_ID = 64


def _cid(value: str) -> str:
    if not value or len(value) > MAX_ID:
        raise InvalidInput("campaign_id is required (at most 64 characters)")
    return value


class CampaignsServicer(campaigns_pb2_grpc.CampaignsServicer):
    """Submit, follow and inspect campaigns; list members; browse data.

    Built from this agent's ``name`` and ``mesh``, its ``admins`` (who sees every
    campaign and may browse data), ``streams`` (Watches end when the agent stops),
    the ``store`` (provenance) and ``source`` (what a data client needs of this
    agent, to check outputs). The data browser, the monitor and membership are
    attached once built; calls that need them are refused as unavailable before.
    """

    def __init__(
        self,
        *,
        name: str,
        mesh: str,
        admins: Collection[str],
        streams: ServedStreams,
        store: Store,
        source: LocalAgent,
    ) -> None:
        self.name = name
        self.mesh = mesh
        self.admins = tuple(admins)
        self.streams = streams
        self.store = store
        self.source = source
        self._monitor_service: Monitor | None = None
        self._members: Gossip | None = None
        self._browser: DataBrowser | None = None

    def attach_data(self, browser: DataBrowser) -> None:
        """Start answering ListData, StatData and ReadData with ``browser``."""
        self._browser = browser

    def attach(self, *, monitor: Monitor, members: Gossip) -> None:
        """Start answering campaign calls with ``monitor`` and ListMembers from ``members``."""
        self._monitor_service = monitor
        self._members = members

    def _monitor(self) -> Monitor:
        if self._monitor_service is None:
            raise Unavailable("the agent is still starting")
        return self._monitor_service

    def _access(self) -> Access:
        return Access.of(current_caller(), self.admins)

    def _owned(self, value: str) -> str:
        """The campaign id, if the caller may see that campaign (else NOT_FOUND)."""
        cid = _cid(value)
        owner = self._monitor().owner_of(cid)
        if owner is None or not self._access().sees(owner):
            raise NotFound(f"no campaign {cid!r} on this agent")
        return cid

    @rpc_errors
    async def Submit(
        self, request: campaigns_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.SubmitResponse:
        cid = await self._monitor().submit(request, owner=self._access().owner)
        return campaigns_pb2.SubmitResponse(campaign_id=cid, monitor=self.name)

    @rpc_errors
    async def Get(
        self, request: campaigns_pb2.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.CampaignStatus:
        return self._monitor().status(self._owned(request.campaign_id))

    @rpc_errors
    async def Watch(
        self, request: campaigns_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Event]:
        monitor = self._monitor()
        cid = self._owned(request.campaign_id)
        async for ev in self.streams.serve(monitor.watch(cid, request.after_seq, request.follow)):
            yield ev

    @rpc_errors
    async def WatchBatches(
        self, request: campaigns_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[campaigns_pb2.EventBatch]:
        monitor = self._monitor()
        cid = self._owned(request.campaign_id)
        async for batch in self.streams.serve(
            monitor.watch_batches(cid, request.after_seq, request.follow)
        ):
            yield campaigns_pb2.EventBatch(events=batch)

    @rpc_errors
    async def Cancel(
        self, request: campaigns_pb2.CancelCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.CampaignStatus:
        return await self._monitor().cancel(self._owned(request.campaign_id))

    @rpc_errors
    async def ListCampaigns(
        self, request: campaigns_pb2.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListCampaignsResponse:
        limit = min(request.limit or 100, 1000)
        scope = self._access().scope
        return campaigns_pb2.ListCampaignsResponse(
            campaigns=self._monitor().list(limit, owner=scope)
        )

    @rpc_errors
    async def GetProvenance(
        self, request: campaigns_pb2.GetProvenanceRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ProvenanceRecord:
        from zambeze_mesh.agent.provenance import provenance_record

        cid = self._owned(request.campaign_id)  # the access rule of Get
        return await provenance_record(
            monitor=self._monitor(),
            store=self.store,
            mesh=self.mesh,
            source=self.source,
            cid=cid,
            after=request.after_seq,
            limit=request.limit,
            check=request.check_outputs,
        )

    @rpc_errors
    async def ListMembers(
        self, request: campaigns_pb2.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListMembersResponse:
        gossip = self._members
        if gossip is None:
            raise Unavailable("membership is not running yet")
        resp = campaigns_pb2.ListMembersResponse(self_name=self.name, mesh=self.mesh)
        for m in gossip.members():
            member = resp.members.add(
                name=m.name,
                address=m.address,
                status=common_pb2.MemberStatus.Value(MemberStatus(m.status).proto_name),
                incarnation=m.incarnation,
                is_self=m.name == self.name,
            )
            if m.record is not None:
                member.capabilities.CopyFrom(m.record.capabilities)
        return resp

    # -- data browsing (see zambeze_mesh.agent.databrowse) ---------------------------
    def _may_browse(self) -> DataBrowser:
        check_browse(require_caller(), self.admins)
        if self._browser is None:
            raise Unavailable("agent is not running")
        return self._browser

    @rpc_errors
    async def ListData(
        self, request: campaigns_pb2.ListDataRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListDataResponse:
        browser = self._may_browse()
        holder, entries, truncated = await browser.list_data(request.uri, request.limit)
        return campaigns_pb2.ListDataResponse(
            entries=[info_to_pb(e) for e in entries], truncated=truncated, agent=holder
        )

    @rpc_errors
    async def StatData(
        self, request: campaigns_pb2.StatDataRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.ObjectInfo:
        browser = self._may_browse()
        return info_to_pb(await browser.stat_data(request.uri))

    @rpc_errors
    async def ReadData(
        self, request: campaigns_pb2.ReadDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[campaigns_pb2.DataChunk]:
        browser = self._may_browse()
        async for p in browser.read_data(request.uri, request.offset, request.size):
            yield campaigns_pb2.DataChunk(offset=p.offset, data=p.data, file_size=p.file_size)
