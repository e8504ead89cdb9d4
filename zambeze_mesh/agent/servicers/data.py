"""``Data`` service (offers, streaming fetch, push, stat, list): protobuf ↔ DataService.

Fault injection for tests: a ``fault(index, chunk) -> chunk`` callable, given to the
servicer or set as its ``fault``, sees every outgoing ``Chunk`` of ``Fetch``
(``index`` counts from 0 in each stream). It may return a modified chunk (e.g. with
corrupted bytes) or raise a :class:`~zambeze_mesh.errors.ZmeshError` to break the
stream with that status.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from zambeze_mesh.agent.datasvc import DataService
from zambeze_mesh.agent.servicers.errors import rpc_errors
from zambeze_mesh.data.stream import chunk_messages
from zambeze_mesh.data.wire import info_to_pb, manifest_to_pb
from zambeze_mesh.errors import InvalidInput, ResourceExhausted, Unauthenticated, Unavailable
from zambeze_mesh.security.authz import require_caller
from zambeze_mesh.v1 import data_pb2, data_pb2_grpc

if TYPE_CHECKING:
    from zambeze_mesh.settings.config import AgentConfig

DataFault = Callable[[int, data_pb2.Chunk], data_pb2.Chunk]
"""Test hook: sees (index in stream, chunk) before a chunk is sent; returns the chunk."""

CHUNK_DIGEST_ALG = "crc32"


def _caller_uri() -> str:
    caller = require_caller()
    if caller.identity is None:
        raise Unauthenticated("the Data service needs a caller with a certificate")
    return caller.identity.uri


class StreamLimiter:
    """Counts the streams (of one RPC) each peer has open; refuses one over the limit."""

    def __init__(self, rpc: str = "Fetch") -> None:
        self.rpc = rpc
        self.open: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, peer: str, limit: int) -> Iterator[None]:
        """Count one stream of ``peer`` for the duration of the block."""
        n = self.open.get(peer, 0)
        if n >= limit:
            raise ResourceExhausted(
                f"{peer} already has {n} {self.rpc} streams open (limit {limit}); "
                "finish or cancel some first"
            )
        self.open[peer] = n + 1
        try:
            yield
        finally:
            left = self.open[peer] - 1
            if left:
                self.open[peer] = left
            else:
                del self.open[peer]


class DataServicer(data_pb2_grpc.DataServicer):
    """Agent-to-agent data movement; the policy lives in :class:`DataService`.

    ``config`` gives the limits (message size, streams per peer, idle timeout); the
    data service is attached once the agent has built it (calls before that are
    refused as unavailable).
    """

    def __init__(self, config: AgentConfig, fault: DataFault | None = None) -> None:
        self.config = config
        self.fault = fault
        self.streams = StreamLimiter("Fetch")
        self.pushes = StreamLimiter("Push")
        self._service: DataService | None = None

    def attach(self, service: DataService) -> None:
        """Start answering with ``service``."""
        self._service = service

    @property
    def service(self) -> DataService:
        """The agent's data service."""
        if self._service is None:
            raise Unavailable("agent is not running")
        return self._service

    def _fault(self) -> DataFault | None:
        return self.fault

    @rpc_errors
    async def Offer(
        self, request: data_pb2.OfferRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.OfferResponse:
        caller = _caller_uri()
        svc = self.service
        res = await asyncio.to_thread(svc.offer, caller, request.path, list(request.methods))
        resp = data_pb2.OfferResponse(
            info=info_to_pb(res.info),
            methods=res.methods,
            chosen=res.chosen,
            grant=data_pb2.Grant(token=res.token, expires_unix_ms=res.expires_ms),
            manifest=manifest_to_pb(res.manifest),
            method_params=res.method_params,
        )
        limit = self.config.max_message_bytes
        if resp.ByteSize() > limit:
            raise ResourceExhausted(
                f"{request.path!r}: the manifest of {len(res.manifest)} files does not fit in "
                f"one message ({limit} bytes); offer a smaller directory"
            )
        return resp

    @rpc_errors
    async def Fetch(  # type: ignore[override]  # writes with context.write (idle timeout)
        self, request: data_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        caller = _caller_uri()
        cfg = self.config
        with self.streams.hold(caller, cfg.max_streams_per_peer):
            await self._fetch(request, context, caller, cfg.stream_idle_timeout_s)

    async def _fetch(
        self,
        request: data_pb2.FetchRequest,
        context: grpc.aio.ServicerContext,
        caller: str,
        idle_s: float,
    ) -> None:
        svc = self.service
        target = await asyncio.to_thread(
            svc.fetch_target, caller, request.grant.token, request.relpath
        )
        if request.offset > target.size:
            raise InvalidInput(f"offset {request.offset} is past the end ({target.size} bytes)")
        fault = self._fault()
        index = 0
        async for msg in chunk_messages(
            target.path,
            request.offset,
            svc.chunk_size(request.chunk_size),
            target.sha256,
            digest_alg=CHUNK_DIGEST_ALG,
        ):
            if fault is not None:
                msg = fault(index, msg)
            index += 1
            # The write waits until gRPC has taken the message (flow control applies);
            # a reader that takes nothing for idle_s seconds loses the stream.
            try:
                await asyncio.wait_for(context.write(msg), idle_s)
            except TimeoutError:
                raise ResourceExhausted(
                    f"fetch: the reader took no data for {idle_s:g} s; stream closed"
                ) from None

    @rpc_errors
    async def Push(
        self, request_iterator: AsyncIterator[data_pb2.PushChunk], context: grpc.aio.ServicerContext
    ) -> data_pb2.PushResponse:
        caller = _caller_uri()
        cfg = self.config
        # The same per-peer stream cap and idle timeout as Fetch: a writer that
        # sends nothing for stream_idle_timeout_s loses the stream.
        with self.pushes.hold(caller, cfg.max_streams_per_peer):
            return await self._push(request_iterator, cfg.stream_idle_timeout_s)

    async def _push(
        self, request_iterator: AsyncIterator[data_pb2.PushChunk], idle_s: float
    ) -> data_pb2.PushResponse:
        it = request_iterator.__aiter__()

        async def next_message() -> data_pb2.PushChunk:
            try:
                return await asyncio.wait_for(it.__anext__(), idle_s)
            except TimeoutError:
                raise ResourceExhausted(
                    f"push: the writer sent no data for {idle_s:g} s; stream closed"
                ) from None

        try:
            first = await next_message()
        except StopAsyncIteration:
            raise InvalidInput("push: empty stream") from None

        async def pieces() -> AsyncIterator[bytes]:
            yield first.data
            while True:
                try:
                    m = await next_message()
                except StopAsyncIteration:
                    return
                if m.path or m.size or m.sha256:
                    raise InvalidInput("push: path, size and sha256 go in the first message only")
                yield m.data

        info = await self.service.receive_push(first.path, first.size, first.sha256, pieces())
        return data_pb2.PushResponse(info=info_to_pb(info))

    @rpc_errors
    async def Stat(
        self, request: data_pb2.StatRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.ObjectInfo:
        _caller_uri()
        info = await asyncio.to_thread(self.service.stat, request.path)
        return info_to_pb(info)

    @rpc_errors
    async def List(
        self, request: data_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.ListResponse:
        _caller_uri()
        entries, truncated = await asyncio.to_thread(self.service.list, request.path, request.limit)
        return data_pb2.ListResponse(entries=[info_to_pb(e) for e in entries], truncated=truncated)
