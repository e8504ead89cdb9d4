"""Holder-side chunk reading and receiver-side resumable fetch."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from zambeze_mesh.data.receive import FileReceiver, chunk_digest
from zambeze_mesh.data.stream import (
    DEFAULT_CHUNK,
    MAX_CHUNK,
    PieceTuple,
    chunk_messages,
    fetch_file,
    is_retryable,
    pieces_from_messages,
    read_chunks,
)
from zambeze_mesh.errors import (
    DataIntegrityError,
    InvalidInput,
    NotFound,
    NotPermitted,
    Unavailable,
)
from zambeze_mesh.v1 import data_pb2

CHUNK = 4096
DATA = os.urandom(CHUNK * 10 + 777)
SHA = hashlib.sha256(DATA).hexdigest()


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _no_wait(_: int) -> float:
    return 0.0


class FakeHolder:
    """An in-process holder: serves DATA from an offset, with scripted faults."""

    def __init__(
        self,
        *,
        break_after: int | None = None,
        breaks: int = 1,
        corrupt_at: int | None = None,
        corruptions: int = 1,
        digests: bool = True,
        tail_bytes: bool = False,
    ) -> None:
        self.break_after = break_after
        self.breaks = breaks
        self.corrupt_at = corrupt_at
        self.corruptions = corruptions
        self.digests = digests
        self.tail_bytes = tail_bytes
        self.opened: list[int] = []
        self.sent = 0

    async def __call__(self, offset: int) -> AsyncIterator[PieceTuple]:
        self.opened.append(offset)
        count = 0
        for off in range(offset, len(DATA), CHUNK):
            data = DATA[off : off + CHUNK]
            last = off + CHUNK >= len(DATA)
            dig = chunk_digest(data) if self.digests else None
            if self.break_after is not None and self.breaks > 0 and count == self.break_after:
                self.breaks -= 1
                raise ConnectionResetError("link cut")
            if self.corrupt_at is not None and self.corruptions > 0 and off == self.corrupt_at:
                self.corruptions -= 1
                data = b"\x00" + data[1:] if data[0] else b"\x01" + data[1:]
            self.sent += len(data)
            count += 1
            yield (off, data, last, dig)
            if last:
                return
        if self.tail_bytes:  # an empty object
            yield (len(DATA), b"", True, None)


async def test_read_chunks_whole_and_from_offset(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(DATA)
    pieces = [p async for p in read_chunks(f, 0, CHUNK)]
    assert b"".join(p.data for p in pieces) == DATA
    assert [p.last for p in pieces] == [False] * 10 + [True]
    assert all(p.offset == i * CHUNK for i, p in enumerate(pieces))
    tail = [p async for p in read_chunks(f, CHUNK * 3 + 5, CHUNK, digest_alg="sha256")]
    assert b"".join(p.data for p in tail) == DATA[CHUNK * 3 + 5 :]
    assert tail[0].digest == chunk_digest(tail[0].data, "sha256")
    end = [p async for p in read_chunks(f, len(DATA), CHUNK)]
    assert [(p.data, p.last) for p in end] == [(b"", True)]


async def test_read_chunks_sizes_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * (MAX_CHUNK + 10))
    sizes = [len(p.data) async for p in read_chunks(f, 0, 1 << 30)]
    assert sizes == [MAX_CHUNK, 10]
    sizes = [len(p.data) async for p in read_chunks(f, 0, 0)]
    assert sizes[0] == DEFAULT_CHUNK
    with pytest.raises(InvalidInput):
        [p async for p in read_chunks(f, MAX_CHUNK + 11, CHUNK)]
    with pytest.raises(NotFound):
        [p async for p in read_chunks(tmp_path / "missing", 0, CHUNK)]
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotPermitted):
        [p async for p in read_chunks(tmp_path / "fifo", 0, CHUNK)]


async def test_read_chunks_early_close(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(DATA)
    gen = read_chunks(f, 0, CHUNK)
    first = await gen.__anext__()
    assert first.data == DATA[:CHUNK]
    await gen.aclose()  # must wait for the read-ahead and close the fd without error


async def test_messages_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(DATA)
    msgs = [m async for m in chunk_messages(f, 0, CHUNK, SHA, digest_alg="crc32")]
    assert msgs[-1].last and msgs[-1].sha256 == SHA
    assert all(m.sha256 == "" for m in msgs[:-1])

    async def gen() -> AsyncIterator[data_pb2.Chunk]:
        for m in msgs:
            yield m

    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    pieces = [p async for p in pieces_from_messages(gen())]
    for off, data, _last, dig in pieces:
        r.write(off, data, dig)
    r.finish()
    assert (tmp_path / "out").read_bytes() == DATA


async def test_fetch_clean(tmp_path: Path) -> None:
    holder = FakeHolder()
    progress: list[tuple[int, int]] = []
    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    stats = await fetch_file(holder, r, on_progress=lambda d, t: progress.append((d, t)))
    assert (tmp_path / "out").read_bytes() == DATA
    assert (stats.retries, stats.bytes_resent, stats.bytes_received) == (0, 0, len(DATA))
    assert progress[-1] == (len(DATA), len(DATA))


async def test_fetch_resumes_after_break(tmp_path: Path) -> None:
    holder = FakeHolder(break_after=4, breaks=2)
    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    stats = await fetch_file(holder, r, backoff=_no_wait)
    assert (tmp_path / "out").read_bytes() == DATA
    assert holder.opened == [0, 4 * CHUNK, 8 * CHUNK]
    assert stats.retries == 2
    assert stats.bytes_resent < 2 * CHUNK
    assert holder.sent - len(DATA) < 2 * CHUNK
    assert _names(tmp_path) == ["out"]


async def test_fetch_refetches_corrupt_chunk(tmp_path: Path) -> None:
    holder = FakeHolder(corrupt_at=3 * CHUNK)
    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    stats = await fetch_file(holder, r, backoff=_no_wait)
    assert (tmp_path / "out").read_bytes() == DATA
    assert holder.opened == [0, 3 * CHUNK]
    assert stats.retries == 1 and stats.restarts == 0
    assert holder.sent - len(DATA) <= CHUNK


async def test_fetch_corruption_without_chunk_digests_restarts(tmp_path: Path) -> None:
    holder = FakeHolder(corrupt_at=3 * CHUNK, digests=False)
    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    stats = await fetch_file(holder, r, backoff=_no_wait)
    assert (tmp_path / "out").read_bytes() == DATA
    assert holder.opened == [0, 0]
    assert stats.restarts == 1 and stats.bytes_resent == len(DATA)


@pytest.mark.parametrize("digests", [True, False])
async def test_fetch_persistent_corruption(tmp_path: Path, digests: bool) -> None:
    holder = FakeHolder(corrupt_at=2 * CHUNK, corruptions=10**6, digests=digests)
    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    with pytest.raises(DataIntegrityError, match="giving up after 4 attempts"):
        await fetch_file(holder, r, max_retries=3, backoff=_no_wait)
    assert _names(tmp_path) == []


async def test_fetch_gives_up_on_dead_link_but_keeps_part(tmp_path: Path) -> None:
    holder = FakeHolder(break_after=3, breaks=10**6)
    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    with pytest.raises(Unavailable, match="giving up"):
        await fetch_file(holder, r, max_retries=2, backoff=_no_wait)
    assert not (tmp_path / "out").exists()
    # A later call (e.g. after a new Offer) resumes where the last one stopped.
    r2 = FileReceiver(tmp_path / "out", len(DATA), SHA)
    assert r2.resume_offset() == 9 * CHUNK
    stats = await fetch_file(FakeHolder(), r2)
    assert stats.resumed_from == 9 * CHUNK and stats.bytes_resent == 0
    assert (tmp_path / "out").read_bytes() == DATA


async def test_fetch_non_retryable_propagates(tmp_path: Path) -> None:
    calls: list[int] = []

    async def denied(offset: int) -> AsyncIterator[PieceTuple]:
        calls.append(offset)
        raise NotPermitted("grant expired")
        yield  # pragma: no cover

    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    with pytest.raises(NotPermitted):
        await fetch_file(denied, r, backoff=_no_wait)
    assert calls == [0]


async def test_fetch_bad_offsets_and_early_end_are_retried(tmp_path: Path) -> None:
    state = {"n": 0}

    async def flaky(offset: int) -> AsyncIterator[PieceTuple]:
        state["n"] += 1
        if state["n"] == 1:
            yield (offset + 5, DATA[offset + 5 : offset + 10], False, None)
            return
        if state["n"] == 2:
            yield (offset, DATA[offset : offset + CHUNK], False, None)
            return  # ends without a last chunk
        async for p in FakeHolder()(offset):
            yield p

    r = FileReceiver(tmp_path / "out", len(DATA), SHA)
    stats = await fetch_file(flaky, r, backoff=_no_wait)
    assert stats.retries == 2
    assert (tmp_path / "out").read_bytes() == DATA


def test_is_retryable() -> None:
    class Rpc(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    assert is_retryable(Unavailable("x"))
    assert is_retryable(ConnectionResetError())
    assert is_retryable(Rpc(grpc.StatusCode.UNAVAILABLE))
    assert not is_retryable(Rpc(grpc.StatusCode.PERMISSION_DENIED))
    assert not is_retryable(NotFound("x"))
    assert not is_retryable(ValueError("bug"))
