"""Client of the ``Campaigns`` gRPC service (the only service the client talks to).

``connect()`` with no target uses the local agent's Unix socket
``unix:<home>/agent.sock`` (home from the argument, ``$ZMESH_HOME`` or
``~/.zmesh``); ``connect("host:port", cert=..., key=..., ca=...)`` uses mTLS with
a client certificate issued by the mesh.

All methods are coroutines that may be awaited from any event loop: the gRPC
channel lives on the private bridge loop (:mod:`zambeze_mesh.campaign.loop`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from zambeze_mesh.campaign.loop import bridge
from zambeze_mesh.campaign.wire import CampaignStatus, Event, Members, SubmitResult
from zambeze_mesh.data.catalog import ObjectInfo
from zambeze_mesh.data.wire import info_from_pb
from zambeze_mesh.errors import RETRY_AFTER_KEY, DataIntegrityError, InvalidInput, Unavailable
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

if TYPE_CHECKING:
    from zambeze_mesh.campaign.activities import Activity

__all__ = ["Client", "connect", "default_client", "set_default_client"]

_MAX_MESSAGE = 64 * 1024 * 1024
#: How long ``submit`` keeps retrying while the agent says it is busy admitting
#: this identity's earlier campaigns (RESOURCE_EXHAUSTED with a retry hint).
SUBMIT_PATIENCE_S = 300.0


def _retry_after_s(exc: grpc.RpcError) -> float | None:
    """The retry hint of a RESOURCE_EXHAUSTED answer, in seconds (None: no hint)."""
    code = exc.code() if hasattr(exc, "code") else None
    if code != grpc.StatusCode.RESOURCE_EXHAUSTED or not hasattr(exc, "trailing_metadata"):
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            try:
                return min(max(int(value), 0), 60_000) / 1000
            except (TypeError, ValueError):
                return None
    return None


_FINAL_CAMPAIGN = frozenset(
    {
        common_pb2.CAMPAIGN_STATE_SUCCEEDED,
        common_pb2.CAMPAIGN_STATE_FAILED,
        common_pb2.CAMPAIGN_STATE_CANCELLED,
    }
)
_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def is_final_wire(pb: common_pb2.Event) -> bool:
    """True for the wire event that ends a campaign (campaign-level, final state)."""
    return not pb.activity and pb.campaign_state in _FINAL_CAMPAIGN


class Client:
    """A connection to one agent's ``Campaigns`` service.

    Args:
        target: ``unix:/path/agent.sock`` or ``host:port``.
        credentials: channel credentials for mTLS (None = insecure, Unix socket only).
        server_name: expected name in the agent's certificate, if not the target host.
        watch_retries: how many times in a row ``watch`` re-subscribes after UNAVAILABLE.
        retry_backoff: first backoff delay in seconds (doubles, capped at 5 s).
    """

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        *,
        server_name: str | None = None,
        watch_retries: int = 8,
        retry_backoff: float = 0.1,
    ) -> None:
        self.target = target
        self._credentials = credentials
        self._options = list(_OPTIONS)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self.watch_retries = watch_retries
        self.retry_backoff = retry_backoff
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Client({self.target!r})"

    # -- channel (bridge loop only) ----------------------------------------------
    def _get_stub(self) -> Any:
        if self._closed:
            raise Unavailable(f"the client for {self.target} is closed")
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            self._stub = campaigns_pb2_grpc.CampaignsStub(self._channel)
        return self._stub

    def _error(self, exc: grpc.RpcError) -> Exception:
        err = from_rpc_error(exc)
        if isinstance(err, Unavailable):
            return Unavailable(f"cannot reach the agent at {self.target}: {err}")
        return err

    async def _call(self, method: str, request: Any, *, patience_s: float = 0.0) -> Any:
        """Call ``method``; while the agent answers RESOURCE_EXHAUSTED with a retry
        hint, wait as told and try again, for up to ``patience_s`` seconds."""

        async def go() -> Any:
            give_up = time.monotonic() + patience_s
            while True:
                try:
                    return await getattr(self._get_stub(), method)(request)
                except grpc.RpcError as exc:
                    wait = _retry_after_s(exc)
                    if wait is None or time.monotonic() + wait > give_up:
                        raise self._error(exc) from None
                    await asyncio.sleep(wait)

        return await bridge.run_async(go())

    # -- API ----------------------------------------------------------------------
    async def submit(
        self,
        name: str,
        activities: Sequence[Activity | common_pb2.ActivitySpec],
        client_request_id: str = "",
    ) -> SubmitResult:
        """Submit a campaign; returns its id and monitor. Raises the mapped error on rejection."""
        specs = [a if isinstance(a, common_pb2.ActivitySpec) else a.to_spec() for a in activities]
        req = campaigns_pb2.SubmitRequest(
            name=name, activities=specs, client_request_id=client_request_id
        )
        resp = await self._call("Submit", req, patience_s=SUBMIT_PATIENCE_S)
        return SubmitResult(campaign_id=resp.campaign_id, monitor=resp.monitor)

    async def get(self, campaign_id: str) -> CampaignStatus:
        """Current state of a campaign and its activities."""
        resp = await self._call("Get", campaigns_pb2.GetCampaignRequest(campaign_id=campaign_id))
        return CampaignStatus.from_proto(resp)

    async def cancel(self, campaign_id: str) -> CampaignStatus:
        """Cancel every unfinished activity of a campaign."""
        req = campaigns_pb2.CancelCampaignRequest(campaign_id=campaign_id)
        return CampaignStatus.from_proto(await self._call("Cancel", req))

    async def list_campaigns(self, limit: int = 0) -> list[CampaignStatus]:
        """Campaigns the agent monitors, newest first (``limit`` 0 = server default)."""
        resp = await self._call("ListCampaigns", campaigns_pb2.ListCampaignsRequest(limit=limit))
        return [CampaignStatus.from_proto(c) for c in resp.campaigns]

    async def list_members(self) -> Members:
        """Mesh members as the connected agent sees them."""
        return Members.from_proto(
            await self._call("ListMembers", campaigns_pb2.ListMembersRequest())
        )

    async def list_data(self, uri: str, limit: int = 0) -> tuple[list[ObjectInfo], bool]:
        """Entries of ``NAME://path`` (a directory by name, or the file itself) and
        whether the listing was truncated at ``limit`` (0 = server default)."""
        resp = await self._call("ListData", campaigns_pb2.ListDataRequest(uri=uri, limit=limit))
        return [info_from_pb(e) for e in resp.entries], bool(resp.truncated)

    async def stat_data(self, uri: str) -> ObjectInfo:
        """Size, mtime and (for files) sha256 of ``NAME://path``."""
        return info_from_pb(await self._call("StatData", campaigns_pb2.StatDataRequest(uri=uri)))

    def read_data(self, uri: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """The bytes of file ``NAME://path`` from ``offset`` (at most ``size``; 0 = to
        the end), a chunk (up to 1 MiB) at a time; at most a few chunks wait unread."""
        return bridge.iterate(self._read_data(uri, offset, size), maxsize=4)

    async def _read_data(self, uri: str, offset: int, size: int) -> AsyncGenerator[bytes, None]:
        req = campaigns_pb2.ReadDataRequest(uri=uri, offset=offset, size=size)
        call = self._get_stub().ReadData(req)
        try:
            async for msg in call:
                if msg.data:
                    yield msg.data
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            call.cancel()

    async def provenance_record(
        self, campaign_id: str, *, check_outputs: bool = True
    ) -> campaigns_pb2.ProvenanceRecord:
        """The campaign's whole provenance record (every journal page gathered into one
        ``ProvenanceRecord``); see :mod:`zambeze_mesh.provenance` to turn it into a crate."""
        req = campaigns_pb2.GetProvenanceRequest(
            campaign_id=campaign_id, check_outputs=check_outputs
        )
        record: campaigns_pb2.ProvenanceRecord = await self._call("GetProvenance", req)
        after = record.next_seq
        while after:
            page = await self._call(
                "GetProvenance",
                campaigns_pb2.GetProvenanceRequest(campaign_id=campaign_id, after_seq=after),
            )
            record.events.extend(page.events)
            after = page.next_seq
        record.next_seq = 0
        return record

    async def activity_specs(self, campaign_id: str) -> list[common_pb2.ActivitySpec]:
        """The campaign's activity specs as submitted (shipped functions left out, see
        ``GetProvenance``): what its DAG is built from."""
        req = campaigns_pb2.GetProvenanceRequest(campaign_id=campaign_id, limit=1)
        record: campaigns_pb2.ProvenanceRecord = await self._call("GetProvenance", req)
        return list(record.activities)

    def watch(
        self, campaign_id: str, after_seq: int = 0, *, follow: bool = True
    ) -> AsyncIterator[Event]:
        """Events with ``seq > after_seq``, in order, until the final campaign event.

        When the stream breaks with UNAVAILABLE, it is resumed from the last seen
        ``seq`` (up to ``watch_retries`` times in a row, with backoff), so no event is
        lost or repeated.
        """
        return bridge.iterate(self._watch(campaign_id, after_seq, follow))

    def watch_batches(self, campaign_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        """Like :meth:`watch`, a batch of consecutive events at a time (each batch is
        what the agent had at that moment): cheaper when following big campaigns."""
        return bridge.iterate(self._watch_batches(campaign_id, after_seq))

    async def _watch_batches(
        self, campaign_id: str, after_seq: int
    ) -> AsyncGenerator[list[Event], None]:
        async for batch in self._watch_wire(campaign_id, after_seq, True):
            yield [Event.from_proto(pb) for pb in batch]

    async def _watch(
        self, campaign_id: str, after_seq: int, follow: bool
    ) -> AsyncGenerator[Event, None]:
        async for batch in self._watch_wire(campaign_id, after_seq, follow):
            for pb in batch:
                yield Event.from_proto(pb)

    async def _watch_wire(
        self, campaign_id: str, after_seq: int, follow: bool
    ) -> AsyncGenerator[list[common_pb2.Event], None]:
        """Wire events in seq order, a batch at a time, resumed after UNAVAILABLE; the
        last batch ends with the final campaign event."""
        last = after_seq
        failures = 0
        while True:
            req = campaigns_pb2.WatchRequest(campaign_id=campaign_id, after_seq=last, follow=follow)
            call = self._get_stub().WatchBatches(req)
            try:
                async for msg in call:
                    fresh = []
                    final = False
                    for pb in msg.events:
                        if pb.seq <= last:
                            continue  # already seen (a server replaying after a resume)
                        if pb.seq != last + 1:
                            raise DataIntegrityError(
                                f"event stream of campaign {campaign_id} skipped from seq "
                                f"{last} to {pb.seq}"
                            )
                        last = pb.seq
                        fresh.append(pb)
                        if is_final_wire(pb):
                            final = True
                            break
                    if fresh:
                        failures = 0
                        yield fresh
                    if final:
                        return
                return
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code != grpc.StatusCode.UNAVAILABLE or failures >= self.watch_retries:
                    raise self._error(exc) from None
                failures += 1
                await asyncio.sleep(min(5.0, self.retry_backoff * 2 ** (failures - 1)))
            finally:
                call.cancel()

    async def close(self) -> None:
        """Close the channel (idempotent)."""
        self._closed = True

        async def go() -> None:
            ch, self._channel, self._stub = self._channel, None, None
            if ch is not None:
                await ch.close()

        await bridge.run_async(go())

    def close_sync(self) -> None:
        """Close the channel from synchronous code."""
        bridge.run(self.close())


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} file {str(path)!r}: {exc.strerror}") from None


_default: Client | None = None
_default_lock = threading.Lock()


def connect(
    target: str | None = None,
    *,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    ca: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    server_name: str | None = None,
    set_default: bool = True,
) -> Client:
    """Connect to an agent and make it the default client of new campaigns.

    No ``target``: the local agent's Unix socket in ``home`` (or ``$ZMESH_HOME``,
    or ``~/.zmesh``). ``"unix:/path"``: that socket. ``"host:port"``: mTLS with the
    client certificate ``cert``, its key ``key`` and the mesh CA bundle ``ca``
    (PEM files). Connecting is lazy: errors surface on the first call.
    """
    if target is None:
        from zambeze_mesh.settings.home import Home

        client = Client(f"unix:{Home.resolve(home).socket}")
    elif target.startswith(("unix:", "unix-abstract:")):
        client = Client(target)
    else:
        if not (cert and key and ca):
            raise InvalidInput(
                f"connecting to {target} needs cert=, key= and ca= (PEM files of a client "
                "certificate issued by the mesh, e.g. with `zmesh cert issue-client`)"
            )
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "CA"),
            private_key=_read(key, "key"),
            certificate_chain=_read(cert, "certificate"),
        )
        client = Client(target, creds, server_name=server_name)
    if set_default:
        set_default_client(client)
    return client


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the one new campaigns use (None: back to the lazy local default)."""
    global _default
    with _default_lock:
        _default = client


def default_client() -> Client:
    """The default client, connecting lazily to the local agent if none was set."""
    global _default
    with _default_lock:
        if _default is None:
            _default = connect(set_default=False)
        return _default
