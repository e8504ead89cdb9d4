"""Streaming logic of a ``grpc-stream`` transfer, independent of the gRPC servicer.

Holder side: :func:`read_chunks` reads a file in chunks from an offset (in a
thread, one chunk read ahead) and :func:`chunk_messages` wraps it into
``data_pb2.Chunk`` messages. Receiver side: :func:`fetch_file` drives a
:class:`~zambeze_mesh.data.receive.FileReceiver` from a callable that opens a
stream at an offset, resuming after broken streams and corrupted chunks, and
:func:`pieces_from_messages` turns ``Chunk`` messages into the tuples it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import grpc

from zambeze_mesh.data.receive import ChunkCorrupt, FileReceiver, chunk_digest
from zambeze_mesh.data.sandbox import open_regular
from zambeze_mesh.errors import DataIntegrityError, InvalidInput, Unavailable, ZmeshError
from zambeze_mesh.v1 import data_pb2

__all__ = [
    "DEFAULT_CHUNK",
    "MAX_CHUNK",
    "FetchStats",
    "Piece",
    "chunk_messages",
    "default_backoff",
    "fetch_file",
    "is_retryable",
    "pieces_from_messages",
    "read_chunks",
]

DEFAULT_CHUNK = 1 << 20
"""Default chunk size (1 MiB)."""
MAX_CHUNK = 4 << 20
"""Largest chunk a holder sends (4 MiB, the gRPC default message limit)."""


class Piece(NamedTuple):
    """One chunk: its offset, bytes, whether it is the last, and its optional digest."""

    offset: int
    data: bytes
    last: bool
    digest: str | None = None


PieceTuple = tuple[int, bytes, bool, str | None]
OpenStream = Callable[[int], AsyncIterable[PieceTuple]]


def _clamp_chunk(chunk_size: int) -> int:
    if chunk_size <= 0:
        return DEFAULT_CHUNK
    return min(chunk_size, MAX_CHUNK)


class _Reader:
    """A file descriptor read from worker threads and closed safely from the loop.

    A read-ahead thread cannot be stopped by cancelling its future, so reads and
    the close share a lock and a read after the close fails instead of touching a
    descriptor number that may have been reused.
    """

    def __init__(self, fd: int, size: int, alg: str | None) -> None:
        self.fd = fd
        self.size = size
        self.alg = alg
        self._lock = threading.Lock()
        self._closed = False

    def read(self, offset: int, n: int) -> Piece:
        with self._lock:
            if self._closed:
                raise Unavailable("stream closed")
            data = os.pread(self.fd, n, offset) if n else b""
        if len(data) != n:
            raise DataIntegrityError("file changed while it was being read")
        dig = chunk_digest(data, self.alg) if self.alg else None
        return Piece(offset, data, offset + n >= self.size, dig)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)


async def read_chunks(
    path: Path,
    offset: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    *,
    digest_alg: str | None = None,
) -> AsyncGenerator[Piece, None]:
    """Yield ``Piece(offset, data, last, digest)`` for ``path`` from ``offset`` to its end.

    Reads run in a thread, one chunk ahead of the consumer. ``chunk_size`` 0 means
    the default (1 MiB); it is capped at 4 MiB. ``digest_alg`` (``"crc32"`` or
    ``"sha256"``) adds a per-chunk digest. An empty remainder yields a single empty
    last chunk. The file is opened with :func:`open_regular` (no symlink, regular
    file only); an offset past the end raises :class:`InvalidInput`.
    """
    n = _clamp_chunk(chunk_size)
    if digest_alg is not None:
        chunk_digest(b"", digest_alg)  # validate the name early
    fd = await asyncio.to_thread(open_regular, path)
    reader = _Reader(fd, os.fstat(fd).st_size, digest_alg)
    pending: asyncio.Future[Piece] | None = None
    try:
        size = reader.size
        if offset < 0 or offset > size:
            raise InvalidInput(f"offset {offset} is outside the file (size {size})")
        nxt: asyncio.Future[Piece] = asyncio.ensure_future(
            asyncio.to_thread(reader.read, offset, min(n, size - offset))
        )
        pending = nxt
        while True:
            piece = await nxt
            pending = None
            pos = piece.offset + len(piece.data)
            if not piece.last:
                nxt = asyncio.ensure_future(asyncio.to_thread(reader.read, pos, min(n, size - pos)))
                pending = nxt
            yield piece
            if piece.last:
                return
    finally:
        if pending is not None:
            if pending.done():
                if not pending.cancelled():
                    pending.exception()  # mark retrieved
            else:
                pending.cancel()
        reader.close()


async def chunk_messages(
    path: Path,
    offset: int,
    chunk_size: int,
    sha256: str,
    *,
    digest_alg: str | None = None,
) -> AsyncGenerator[data_pb2.Chunk, None]:
    """``data_pb2.Chunk`` messages for a Fetch response; the last carries ``sha256``,
    each its ``chunk_digest`` when ``digest_alg`` is given."""
    async for p in read_chunks(path, offset, chunk_size, digest_alg=digest_alg):
        msg = data_pb2.Chunk(offset=p.offset, data=p.data, last=p.last)
        if p.last:
            msg.sha256 = sha256
        if p.digest is not None:
            msg.chunk_digest = p.digest
        yield msg


async def pieces_from_messages(
    messages: AsyncIterable[data_pb2.Chunk],
) -> AsyncGenerator[PieceTuple, None]:
    """Turn received ``Chunk`` messages into ``(offset, data, last, chunk_digest)``."""
    async for m in messages:
        yield (m.offset, m.data, m.last, m.chunk_digest or None)


@dataclass(slots=True)
class FetchStats:
    """What a :func:`fetch_file` call did."""

    bytes_received: int = 0
    bytes_resent: int = 0
    """Bytes received for offsets that had been received before (the cost of failures)."""
    retries: int = 0
    """Streams that failed and were re-opened."""
    restarts: int = 0
    """Times the whole file was thrown away after a whole-file digest mismatch."""
    resumed_from: int = 0
    """Bytes already present (from an earlier attempt) when the call started."""


_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def is_retryable(exc: BaseException) -> bool:
    """Default policy: network trouble and corruption are retried, refusals are not."""
    if isinstance(exc, ZmeshError):
        return isinstance(exc, Unavailable | DataIntegrityError)
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        return code in _RETRY_CODES
    return isinstance(exc, ConnectionError | TimeoutError | EOFError)


def default_backoff(failures: int) -> float:
    """Seconds to wait before retry number ``failures`` (50 ms doubling, at most 2 s)."""
    return float(min(2.0, 0.05 * 2 ** (failures - 1)))


class _StreamFault(Exception):
    """The holder's stream misbehaved (wrong offset, ended early)."""


async def _aclose(stream: AsyncIterable[PieceTuple]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
    cancel = getattr(stream, "cancel", None)  # grpc.aio call objects
    if aclose is None and cancel is not None:
        cancel()


async def _pump(
    stream: AsyncIterable[PieceTuple],
    receiver: FileReceiver,
    stats: FetchStats,
    high: list[int],
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Feed one stream into the receiver until its last chunk; raise on any fault."""
    async for off, data, last, dig in stream:
        if off != receiver.offset:
            raise _StreamFault(f"holder sent offset {off}, expected {receiver.offset}")
        await asyncio.to_thread(receiver.write, off, data, dig)
        n = len(data)
        stats.bytes_received += n
        stats.bytes_resent += max(0, min(off + n, high[0]) - off)
        high[0] = max(high[0], off + n)
        if on_progress is not None:
            on_progress(receiver.offset, receiver.size)
        if last:
            return
    raise _StreamFault("stream ended before the last chunk")


async def fetch_file(
    open_stream: OpenStream,
    receiver: FileReceiver,
    *,
    max_retries: int = 5,
    on_progress: Callable[[int, int], None] | None = None,
    backoff: Callable[[int], float] = default_backoff,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> FetchStats:
    """Fetch one file into ``receiver``, resuming and retrying, and install it.

    ``open_stream(offset)`` opens a new stream of ``(offset, data, last, chunk_digest)``
    tuples starting at ``offset``. A broken stream is re-opened at
    ``receiver.resume_offset()``; a chunk that fails its digest is re-fetched from
    its offset; a whole-file sha256 mismatch throws the part file away and starts
    over. After ``max_retries`` failures: :class:`DataIntegrityError` (part file
    deleted) when the last failure was corruption, else :class:`Unavailable` (part
    file kept so a later call can resume). Errors ``retryable`` rejects (e.g. an
    expired grant) propagate at once, keeping the part file.
    """
    start = receiver.resume_offset()
    stats = FetchStats(resumed_from=start)
    high = [start]
    failures = 0
    while True:
        error: BaseException | None = None
        stream = open_stream(receiver.resume_offset())
        try:
            await _pump(stream, receiver, stats, high, on_progress)
        except ChunkCorrupt as exc:
            error = exc
        except DataIntegrityError as exc:  # more bytes than announced: object changed
            error = exc
            receiver.restart()
            stats.restarts += 1
        except _StreamFault as exc:
            error = Unavailable(str(exc))
        except Exception as exc:
            if not retryable(exc):
                receiver.close()
                raise
            error = exc
        finally:
            await _aclose(stream)
        if error is None:
            try:
                await asyncio.to_thread(receiver.finish)
                return stats
            except DataIntegrityError as exc:
                error = exc
                receiver.restart()
                stats.restarts += 1
        failures += 1
        stats.retries = failures
        if failures > max_retries:
            name = receiver.dest.name
            if isinstance(error, DataIntegrityError):
                receiver.abort()
                raise DataIntegrityError(
                    f"{name!r}: giving up after {failures} attempts: {error}"
                ) from error
            receiver.close()
            raise Unavailable(f"{name!r}: giving up after {failures} attempts: {error}") from error
        await asyncio.sleep(backoff(failures))
