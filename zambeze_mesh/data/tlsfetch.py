"""The ``tls-stream`` transfer method (requester side).

``Offer`` (gRPC, the control channel) returns the grant and, in
``method_params``, the holder's data port. The bytes then flow over TLS
connections to that port (:mod:`~zambeze_mesh.data.tlsrecv`), into a
:class:`~zambeze_mesh.data.receive.FileReceiver`: resumable from the last
verified offset, crc32 per frame, sha256 of the whole, atomic rename. Files of at
least :data:`STRIPE_MIN` bytes are striped over ``transfer_streams`` connections;
smaller files of a directory move ``transfer_streams`` at a time.

If the data port cannot be reached before any byte arrived, the method raises
:class:`Unavailable` and :meth:`DataClient.fetch` falls back to ``grpc-stream``.
A holder that goes away mid-transfer is offered to again (its data port may
have changed when it restarted) and the transfer resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zambeze_mesh.data.methods import TLS_STREAM
from zambeze_mesh.data.receive import ChunkCorrupt, FileReceiver, already_present, manifest_dest
from zambeze_mesh.data.stream import FetchStats, default_backoff
from zambeze_mesh.data.tlsbio import TLSConn
from zambeze_mesh.data.tlsrecv import StripedReceive
from zambeze_mesh.data.tlswire import DEFAULT_FRAME, client_context, tune_socket
from zambeze_mesh.data.wire import info_from_pb, manifest_from_pb
from zambeze_mesh.errors import (
    DataIntegrityError,
    FailedPrecondition,
    NotPermitted,
    Unavailable,
)

if TYPE_CHECKING:
    from zambeze_mesh.data.client import DataClient, FetchJob, FetchResult

__all__ = [
    "CONNECT_TIMEOUT_S",
    "STRIPE_MIN",
    "Unreachable",
    "connector",
    "tls_context",
    "tls_stream_fetch",
]

STRIPE_MIN = 64 << 20
"""Files at least this large are striped over several connections."""
CONNECT_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 60.0
CHECKPOINT_BYTES = 64 << 20
"""Sidecar interval for tls-stream (the part file is fsynced once, before the rename)."""
GRANT_REFRESHES = 3

_CONTEXTS: weakref.WeakKeyDictionary[DataClient, ssl.SSLContext] = weakref.WeakKeyDictionary()


class Unreachable(Unavailable):
    """The data port did not accept a TLS connection."""


def tls_context(client: DataClient) -> ssl.SSLContext:
    """The client TLS context of ``client``'s identity (built once per client)."""
    ctx = _CONTEXTS.get(client)
    if ctx is None:
        ident = getattr(client.peers, "tls_identity", None)
        if ident is None:
            raise Unavailable("tls-stream: this client has no TLS identity")
        ctx = client_context(*ident())
        _CONTEXTS[client] = ctx
    return ctx


def connector(
    ctx: ssl.SSLContext, host: str, port: int, *, idle_s: float = IDLE_TIMEOUT_S
) -> Callable[[], TLSConn]:
    """A function opening a tuned, handshaken TLS connection to ``host``: ``port``."""

    def connect() -> TLSConn:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, kind, proto, _, addr = infos[0]
            raw = socket.socket(family, kind, proto)
        except OSError as exc:
            raise Unreachable(f"tls-stream: cannot reach {host}:{port}: {exc}") from None
        try:
            tune_socket(raw)  # before connect, so the window scale can use the buffers
            raw.settimeout(CONNECT_TIMEOUT_S)
            raw.connect(addr)
            conn = TLSConn(raw, ctx, server_side=False, server_hostname=host)
            conn.handshake()
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise Unreachable(f"tls-stream: cannot reach {host}:{port}: {exc}") from None
        conn.settimeout(idle_s)
        return conn

    return connect


def _endpoint(job: FetchJob) -> tuple[str, int]:
    from zambeze_mesh.settings.config import split_hostport

    port = job.offer.method_params.get("port", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise Unavailable("tls-stream: the holder announced no data port")
    host = split_hostport(job.address)[0]
    return host, int(port)


async def _reoffer(job: FetchJob) -> None:
    """Offer again (new grant, maybe a new data port); the object must not have changed."""
    fresh = await job.client.offer(job.address, job.path)
    same = fresh.info.sha256 == job.offer.info.sha256 and fresh.info.size == job.offer.info.size
    if not same:
        raise FailedPrecondition(f"{job.path!r} changed at the holder during the transfer")
    if fresh.chosen != TLS_STREAM:
        raise Unavailable("tls-stream: the holder no longer offers it")
    job.offer = fresh


@dataclass
class _Run:
    """State shared by the files of one fetch."""

    job: FetchJob
    total: int
    done: int = 0
    any_bytes: bool = False


async def _receive(rx: StripedReceive) -> None:
    fut = asyncio.ensure_future(asyncio.to_thread(rx.run))
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        rx.cancel()
        with contextlib.suppress(BaseException):
            await fut
        raise


async def _attempts(
    run: _Run, relpath: str, receiver: FileReceiver, size: int, sha: str, streams: int
) -> FetchStats:
    job = run.job
    client = job.client
    backoff = client.backoff or default_backoff
    loop = asyncio.get_running_loop()
    stats = FetchStats(resumed_from=receiver.resume_offset())
    base = run.done
    high = stats.resumed_from
    failures = 0

    def progress(offset: int) -> None:
        if job.on_progress is not None:
            loop.call_soon_threadsafe(job.on_progress, base + offset, run.total)

    while True:
        error: BaseException | None = None
        host, port = _endpoint(job)
        rx = StripedReceive(
            connector(tls_context(client), host, port),
            job.offer.grant.token,
            relpath,
            size,
            sha,
            receiver,
            stripes=streams,
            frame=DEFAULT_FRAME,
            high=high,
            on_write=progress,
        )
        try:
            await _receive(rx)
        except ChunkCorrupt as exc:
            error = exc
        except DataIntegrityError as exc:
            error = exc
            await asyncio.to_thread(receiver.restart)
            stats.restarts += 1
        except Unreachable as exc:
            error = exc
            try:
                await _reoffer(job)  # a restarted holder has a new data port
            except (Unavailable, NotPermitted) as again:
                error = again
            if not run.any_bytes and _endpoint(job)[1] == port:
                raise  # nothing moved and nothing changed: let grpc-stream try
        except Unavailable as exc:
            error = exc
        finally:
            stats.bytes_received += rx.stats.received
            stats.bytes_resent += rx.stats.resent
            high = max(high, rx.stats.high)
            run.any_bytes = run.any_bytes or rx.stats.received > 0
        if error is None:
            try:
                await asyncio.to_thread(receiver.finish)
                return stats
            except DataIntegrityError as exc:
                error = exc
                await asyncio.to_thread(receiver.restart)
                stats.restarts += 1
        failures += 1
        stats.retries = failures
        if failures > client.max_retries:
            name = receiver.dest.name
            if isinstance(error, DataIntegrityError):
                await asyncio.to_thread(receiver.abort)
                raise DataIntegrityError(
                    f"{name!r}: giving up after {failures} attempts: {error}"
                ) from error
            raise Unavailable(f"{name!r}: giving up after {failures} attempts: {error}") from error
        await asyncio.sleep(backoff(failures))


async def _fetch_one(
    run: _Run, relpath: str, target: Path, size: int, sha: str, streams: int
) -> FetchStats:
    for refresh in range(GRANT_REFRESHES + 1):
        receiver = await asyncio.to_thread(
            FileReceiver,
            target,
            size,
            sha,
            checkpoint_bytes=CHECKPOINT_BYTES,
            fsync_checkpoints=False,  # one fsync before the rename, like a plain copy
        )
        try:
            return await _attempts(run, relpath, receiver, size, sha, streams)
        except NotPermitted as exc:
            if "expired" not in str(exc) or refresh == GRANT_REFRESHES:
                raise
        finally:
            receiver.close()
        await _reoffer(run.job)
    raise AssertionError("unreachable")  # pragma: no cover


async def tls_stream_fetch(job: FetchJob) -> FetchResult:
    """Fetch a file or directory over the holder's TLS data port."""
    from zambeze_mesh.data.client import FetchResult

    t0 = time.monotonic()
    streams = max(1, int(getattr(job.client, "transfer_streams", 1)))
    offer = job.offer
    info = info_from_pb(offer.info)
    _endpoint(job)  # no port announced: fall back at once
    result = FetchResult(0, 0, TLS_STREAM, 0.0, info=info, streams=1)
    if info.is_dir:
        if job.dest.exists() and not job.dest.is_dir():
            raise FailedPrecondition(f"{str(job.dest)!r} exists and is not a directory")
        await asyncio.to_thread(job.dest.mkdir, parents=True, exist_ok=True)
        entries = [(e.relpath, e.size, e.sha256) for e in manifest_from_pb(offer.manifest)]
    else:
        entries = [("", info.size, info.sha256)]
    run = _Run(job, sum(size for _, size, _ in entries))

    async def one(relpath: str, size: int, sha: str, k: int) -> None:
        target = manifest_dest(job.dest, relpath) if relpath else job.dest
        result.files += 1
        if await asyncio.to_thread(already_present, target, size, sha):
            result.skipped += 1
        else:
            stats = await _fetch_one(run, relpath, target, size, sha, k)
            result.bytes += stats.bytes_received
            result.sent_twice += stats.bytes_resent
            result.retries += stats.retries
            result.streams = max(result.streams, k)
        run.done += size
        if job.on_progress is not None:
            job.on_progress(run.done, run.total)

    small = [e for e in entries if e[1] < STRIPE_MIN]
    big = [e for e in entries if e[1] >= STRIPE_MIN]
    if small:  # several files at once, one connection each
        gate = asyncio.Semaphore(streams)

        async def gated(relpath: str, size: int, sha: str) -> None:
            async with gate:
                await one(relpath, size, sha, 1)

        await _gather(*(gated(*e) for e in small))
        if len(small) > 1:
            result.streams = max(result.streams, min(streams, len(small)))
    for relpath, size, sha in big:  # one at a time, striped
        await one(relpath, size, sha, streams)
    result.seconds = time.monotonic() - t0
    return result


async def _gather(*aws: object) -> None:
    """Run ``aws`` together; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
