"""The fetching side of the data fabric: ``DataClient`` (fetch, push, stat, list).

``fetch`` asks the holder to ``Offer`` the object, picks a transfer method by the
holder's answer, and runs it. Methods plug in through a small registry
(:data:`METHODS`: name → ``async (FetchJob) -> FetchResult``); ``grpc-stream`` is
built in: a resumable ``Fetch`` stream per file into a
:class:`~zambeze_mesh.data.receive.FileReceiver`. Directories move as their manifest
plus one fetch per file; files already present with the same size and sha256 are
not fetched again.

A client talks to holders through :class:`Peers`: an agent's own channels and
gossip view (``DataClient(agent)``), or the identity stored in an agent home
(:meth:`DataClient.from_home`, for the CLI and tests).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from zambeze_mesh.data.catalog import ObjectInfo, sha256_file
from zambeze_mesh.data.methods import GRPC_STREAM, RSYNC, TLS_STREAM, normalize_methods
from zambeze_mesh.data.peers import (
    AgentPeers,
    HomePeers,
    LocalAgent,
    Peers,
    looks_like_address,
)
from zambeze_mesh.data.receive import FileReceiver, already_present, manifest_dest
from zambeze_mesh.data.rsync import RsyncSettings, rsync_fetch
from zambeze_mesh.data.stream import (
    DEFAULT_CHUNK,
    FetchStats,
    PieceTuple,
    fetch_file,
    pieces_from_messages,
)
from zambeze_mesh.data.tlsfetch import tls_stream_fetch
from zambeze_mesh.data.wire import info_from_pb, manifest_from_pb
from zambeze_mesh.errors import (
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotPermitted,
    Unavailable,
    ZmeshError,
)
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.v1 import data_pb2, data_pb2_grpc

if TYPE_CHECKING:
    from zambeze_mesh.settings.home import Home

__all__ = [
    "METHODS",
    "DataClient",
    "FetchJob",
    "FetchMethod",
    "FetchResult",
    "Peers",
    "PushResult",
    "grpc_stream_fetch",
]

Progress = Callable[[int, int], None]
"""``on_progress(done_bytes, total_bytes)`` for a whole object (all files of a directory)."""

GRANT_REFRESHES = 3
log = logging.getLogger(__name__)


@dataclass(slots=True)
class FetchResult:
    """What a fetch did: bytes received, bytes received twice (cost of failures), etc."""

    bytes: int
    sent_twice: int
    method: str
    seconds: float
    files: int = 0
    skipped: int = 0
    """Files not fetched because an identical copy was already in place."""
    retries: int = 0
    info: ObjectInfo | None = None
    streams: int = 1
    """Most connections used at once (parallel stripes or files)."""
    fallback_from: str = ""
    """The method that was chosen but could not run (then ``method`` is ``grpc-stream``)."""


@dataclass(slots=True)
class PushResult:
    """What a push did; ``skipped`` counts files already identical at the holder."""

    bytes: int
    seconds: float
    files: int = 0
    skipped: int = 0
    info: ObjectInfo | None = None


@dataclass
class FetchJob:
    """Everything a transfer method needs: the holder, the offer, where to put it."""

    client: DataClient
    address: str
    path: str
    offer: data_pb2.OfferResponse
    dest: Path
    on_progress: Progress | None = None


FetchMethod = Callable[[FetchJob], Awaitable[FetchResult]]


def _rpc(exc: grpc.RpcError) -> ZmeshError:
    return from_rpc_error(exc)


class DataClient:
    """Fetch, push, stat and list data held by agents of the mesh.

    ``source`` is a running agent (:class:`~zambeze_mesh.data.peers.LocalAgent`) or any
    :class:`Peers`. ``methods`` are the transfer methods this side can run, in order
    of preference (default: for an agent, its ``transfer_methods`` that
    :data:`METHODS` knows, in the config's order; else :data:`METHODS`).
    ``rsync`` is this side's ssh identity for the ``rsync`` method (default: from the
    agent's config, else plain ``ssh``). ``transfer_streams`` is how many TLS
    connections ``tls-stream`` uses at once (default: the agent's config, else 1).
    """

    def __init__(
        self,
        source: LocalAgent | Peers,
        *,
        methods: Mapping[str, FetchMethod] | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        max_retries: int = 8,
        backoff: Callable[[int], float] | None = None,
        rpc_timeout: float = 600.0,
        rsync: RsyncSettings | None = None,
        transfer_streams: int | None = None,
    ) -> None:
        is_peers = hasattr(source, "channel") and hasattr(source, "address_of")
        self.peers: Peers = source if is_peers else AgentPeers(source)  # type: ignore[assignment,arg-type]
        cfg = None if is_peers else getattr(source, "config", None)
        if methods is None and cfg is not None:
            prefs = normalize_methods(cfg.transfer_methods)
            methods = {m: METHODS[m] for m in prefs if m in METHODS}
        self.methods: dict[str, FetchMethod] = dict(methods if methods is not None else METHODS)
        if rsync is None and cfg is not None:
            rsync = RsyncSettings.from_config(cfg)
        self.rsync = rsync or RsyncSettings()
        if GRPC_STREAM not in self.methods:
            self.methods[GRPC_STREAM] = grpc_stream_fetch
        self.chunk_size = chunk_size
        self.max_retries = max_retries
        self.backoff = backoff
        self.rpc_timeout = rpc_timeout
        if transfer_streams is None:
            transfer_streams = getattr(cfg, "transfer_streams", 1) if cfg is not None else 1
        self.transfer_streams = max(1, int(transfer_streams))

    @classmethod
    def from_home(
        cls, home: Home, *, addresses: Mapping[str, str] | None = None, **kw: Any
    ) -> DataClient:
        """A client presenting the agent identity stored in ``home`` (call :meth:`close`)."""
        return cls(HomePeers(home, addresses), **kw)

    async def close(self) -> None:
        """Release channels this client owns."""
        await self.peers.close()

    async def __aenter__(self) -> DataClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing --------------------------------------------------------------------

    async def address(self, holder: str) -> str:
        """``holder`` as an address: ``host:port`` as is, else an agent name looked up."""
        if looks_like_address(holder):
            return holder
        return await self.peers.address_of(holder)

    def stub(self, address: str) -> data_pb2_grpc.DataStub:
        """A ``Data`` stub for ``address``."""
        return data_pb2_grpc.DataStub(self.peers.channel(address))

    async def offer(self, address: str, path: str) -> data_pb2.OfferResponse:
        """Ask the holder at ``address`` to offer ``path`` with our methods."""
        try:
            resp: data_pb2.OfferResponse = await self.stub(address).Offer(
                data_pb2.OfferRequest(path=path, methods=list(self.methods)),
                timeout=self.rpc_timeout,
            )
        except grpc.RpcError as exc:
            raise _rpc(exc) from None
        return resp

    # -- public operations -----------------------------------------------------------

    async def fetch(
        self, holder: str, path: str, dest: Path, *, on_progress: Progress | None = None
    ) -> FetchResult:
        """Fetch ``path`` from ``holder`` (name or ``host:port``) into ``dest``.

        A file lands at ``dest``; a directory's files land under ``dest``. Raises the
        holder's refusal as a :class:`ZmeshError` (``NotPermitted``, ``NotFound``...).
        """
        address = await self.address(holder)
        offer = await self.offer(address, path)
        method = offer.chosen if offer.chosen in self.methods else GRPC_STREAM
        job = FetchJob(self, address, path, offer, Path(dest), on_progress)
        if method == GRPC_STREAM:
            return await self.methods[method](job)
        try:
            return await self.methods[method](job)
        except (Unavailable, InvalidInput) as exc:
            # The method could not run (ssh unreachable, bad parameters): the bytes
            # still move, over grpc-stream. Integrity errors are not retried.
            log.warning(
                "%s from %s failed, falling back to %s: %s", method, holder, GRPC_STREAM, exc
            )
            result = await self.methods[GRPC_STREAM](job)
            result.fallback_from = method
            return result

    async def stat(self, holder: str, path: str) -> ObjectInfo:
        """Size, mtime and sha256 of ``path`` at ``holder``."""
        address = await self.address(holder)
        try:
            msg = await self.stub(address).Stat(
                data_pb2.StatRequest(path=path), timeout=self.rpc_timeout
            )
        except grpc.RpcError as exc:
            raise _rpc(exc) from None
        return info_from_pb(msg)

    async def list(self, holder: str, path: str, limit: int = 0) -> tuple[list[ObjectInfo], bool]:
        """Entries of ``path`` at ``holder`` and whether the listing was truncated."""
        address = await self.address(holder)
        try:
            resp = await self.stub(address).List(
                data_pb2.ListRequest(path=path, limit=limit), timeout=self.rpc_timeout
            )
        except grpc.RpcError as exc:
            raise _rpc(exc) from None
        return [info_from_pb(e) for e in resp.entries], bool(resp.truncated)

    async def push(
        self, local: Path, holder: str, path: str, *, on_progress: Progress | None = None
    ) -> PushResult:
        """Upload file or directory ``local`` to ``path`` at ``holder``.

        Files already identical at the holder (same size and sha256) are skipped.
        """
        local = Path(local)
        address = await self.address(holder)
        t0 = time.monotonic()
        if local.is_dir():
            files = await asyncio.to_thread(_local_files, local)
        elif local.is_file():
            files = [("", local)]
        else:
            raise NotFound(f"{str(local)!r} is not a file or directory")
        total = sum(p.stat().st_size for _, p in files)
        result = PushResult(0, 0.0)
        done = 0
        for rel, p in files:
            remote = f"{path.rstrip('/')}/{rel}" if rel else path
            base = done

            def progress(n: int, _b: int = base) -> None:
                if on_progress is not None:
                    on_progress(_b + n, total)

            sent, skipped, info = await self._push_file(address, p, remote, progress)
            done += info.size
            result.files += 1
            result.bytes += sent
            result.skipped += int(skipped)
            result.info = info
            progress(info.size)
        result.seconds = time.monotonic() - t0
        return result

    async def _push_file(
        self, address: str, local: Path, remote: str, progress: Callable[[int], None]
    ) -> tuple[int, bool, ObjectInfo]:
        size = local.stat().st_size
        sha = await asyncio.to_thread(sha256_file, local)
        stub = self.stub(address)
        try:
            have = await stub.Stat(data_pb2.StatRequest(path=remote), timeout=self.rpc_timeout)
            if not have.is_dir and have.size == size and have.sha256 == sha:
                return 0, True, info_from_pb(have)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise _rpc(exc) from None
        chunk = min(self.chunk_size or DEFAULT_CHUNK, DEFAULT_CHUNK)

        async def messages() -> AsyncIterator[data_pb2.PushChunk]:
            yield data_pb2.PushChunk(path=remote, size=size, sha256=sha)
            sent = 0
            with open(local, "rb", buffering=0) as f:
                while True:
                    data = await asyncio.to_thread(f.read, chunk)
                    if not data:
                        return
                    sent += len(data)
                    progress(sent)
                    yield data_pb2.PushChunk(data=data)

        try:
            resp = await stub.Push(messages(), timeout=self.rpc_timeout)
        except grpc.RpcError as exc:
            raise _rpc(exc) from None
        return size, False, info_from_pb(resp.info)


def _local_files(root: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out.append((p.relative_to(root).as_posix(), p))
    return out


# -- grpc-stream ---------------------------------------------------------------------


async def grpc_stream_fetch(job: FetchJob) -> FetchResult:
    """The built-in ``grpc-stream`` method: resumable ``Fetch`` streams, file by file."""
    t0 = time.monotonic()
    offer = job.offer
    info = info_from_pb(offer.info)
    result = FetchResult(0, 0, GRPC_STREAM, 0.0, info=info)
    if info.is_dir:
        if job.dest.exists() and not job.dest.is_dir():
            raise FailedPrecondition(f"{str(job.dest)!r} exists and is not a directory")
        await asyncio.to_thread(job.dest.mkdir, parents=True, exist_ok=True)
        entries = [(e.relpath, e.size, e.sha256) for e in manifest_from_pb(offer.manifest)]
    else:
        entries = [("", info.size, info.sha256)]
    total = sum(size for _, size, _ in entries)
    done = 0
    for relpath, size, sha in entries:
        target = manifest_dest(job.dest, relpath) if relpath else job.dest
        result.files += 1
        if await asyncio.to_thread(already_present, target, size, sha):
            result.skipped += 1
        else:
            stats = await _fetch_one(job, relpath, target, size, sha, done, total)
            result.bytes += stats.bytes_received
            result.sent_twice += stats.bytes_resent
            result.retries += stats.retries
        done += size
        if job.on_progress is not None:
            job.on_progress(done, total)
    result.seconds = time.monotonic() - t0
    return result


async def _fetch_one(
    job: FetchJob, relpath: str, target: Path, size: int, sha: str, base: int, total: int
) -> FetchStats:
    client = job.client
    chunk = client.chunk_size

    def open_stream(offset: int) -> AsyncIterator[PieceTuple]:
        req = data_pb2.FetchRequest(
            grant=job.offer.grant, relpath=relpath, offset=offset, chunk_size=chunk
        )
        return _stream(client.stub(job.address), req)

    def progress(done: int, _total: int) -> None:
        if job.on_progress is not None:
            job.on_progress(base + done, total)

    kw: dict[str, Any] = {}
    if client.backoff is not None:
        kw["backoff"] = client.backoff
    for refresh in range(GRANT_REFRESHES + 1):
        receiver = await asyncio.to_thread(FileReceiver, target, size, sha)
        try:
            return await fetch_file(
                open_stream,
                receiver,
                max_retries=client.max_retries,
                on_progress=progress,
                **kw,
            )
        except grpc.RpcError as exc:
            err = _rpc(exc)
            if not (isinstance(err, NotPermitted) and "expired" in str(err)):
                raise err from None
            if refresh == GRANT_REFRESHES:
                raise err from None
        finally:
            receiver.close()
        await _refresh_grant(job, relpath, size, sha)
    raise AssertionError("unreachable")  # pragma: no cover


async def _refresh_grant(job: FetchJob, relpath: str, size: int, sha: str) -> None:
    """The grant expired mid-transfer: offer again; the object must not have changed."""
    fresh = await job.client.offer(job.address, job.path)
    same = fresh.info.sha256 == job.offer.info.sha256 and fresh.info.size == job.offer.info.size
    if not same:
        raise FailedPrecondition(f"{job.path!r} changed at the holder during the transfer")
    job.offer = fresh


async def _stream(
    stub: data_pb2_grpc.DataStub, req: data_pb2.FetchRequest
) -> AsyncIterator[PieceTuple]:
    call = stub.Fetch(req)
    try:
        async for piece in pieces_from_messages(call):
            yield piece
    finally:
        call.cancel()


METHODS: dict[str, FetchMethod] = {
    TLS_STREAM: tls_stream_fetch,
    GRPC_STREAM: grpc_stream_fetch,
    RSYNC: rsync_fetch,
}
"""Transfer methods this process can run, by name, in order of preference."""
