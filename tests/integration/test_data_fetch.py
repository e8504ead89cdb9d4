"""Data service end to end between in-process agents (real gRPC, real mTLS, real files)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.files import sha, write_random
from tests.helpers.inproc import mesh
from zambeze_mesh.data.client import DataClient
from zambeze_mesh.errors import DataIntegrityError, Unavailable
from zambeze_mesh.v1 import data_pb2, data_pb2_grpc

MiB = 1 << 20


def grpc_only(i: int) -> dict[str, object]:
    """These tests are about grpc-stream (tls-stream has its own in test_data_tls.py)."""
    return {"transfer_methods": ["grpc-stream"]}


async def test_fetch_file_and_directory_then_identical_not_resent(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2, configure=grpc_only) as (a, b):
        src = write_random(a.data_dir / "big.bin", 5 * MiB + 123)
        tree = a.data_dir / "tree"
        write_random(tree / "x.bin", 300_000)
        write_random(tree / "sub" / "y.bin", 2 * MiB)
        (tree / "empty.txt").write_bytes(b"")
        client = DataClient(b)
        seen: list[tuple[int, int]] = []
        dest = tmp_path / "got" / "big.bin"
        res = await client.fetch(
            a.name, "big.bin", dest, on_progress=lambda d, t: seen.append((d, t))
        )
        assert sha(dest) == sha(src)
        assert res.bytes == src.stat().st_size and res.sent_twice == 0
        assert res.method == "grpc-stream" and res.files == 1 and res.skipped == 0
        assert seen[-1] == (src.stat().st_size, src.stat().st_size)
        assert not list(dest.parent.glob("*.zpart*"))

        again = await client.fetch(a.name, "big.bin", dest)
        assert again.bytes == 0 and again.skipped == 1

        out = tmp_path / "got" / "tree"
        res = await client.fetch(a.address, "tree", out)  # by address this time
        assert res.files == 3 and res.bytes == 300_000 + 2 * MiB
        for rel in ("x.bin", "sub/y.bin", "empty.txt"):
            assert sha(out / rel) == sha(tree / rel)
        write_random(tree / "x.bin", 1000)  # one file changes: only it moves
        res = await client.fetch(a.name, "tree", out)
        assert res.bytes == 1000 and res.skipped == 2
        assert sha(out / "x.bin") == sha(tree / "x.bin")


async def test_resume_after_broken_stream_sends_little_twice(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2, configure=grpc_only) as (a, b):
        src = write_random(a.data_dir / "f.bin", 8 * MiB + 7)
        broken: list[int] = []

        def fault(i: int, msg: data_pb2.Chunk) -> data_pb2.Chunk:
            if i == 3 and not broken:
                broken.append(msg.offset)
                raise Unavailable("injected: stream broken")
            return msg

        a.data_servicer.fault = fault
        dest = tmp_path / "f.bin"
        res = await DataClient(b, backoff=lambda n: 0.01).fetch(a.name, "f.bin", dest)
        assert broken == [3 * MiB]
        assert res.retries == 1
        assert res.sent_twice < 2 * MiB
        assert res.bytes < src.stat().st_size + 2 * MiB
        assert sha(dest) == sha(src)


async def test_corrupted_chunk_detected_refetched_never_installed(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2, configure=grpc_only) as (a, b):
        src = write_random(a.data_dir / "f.bin", 4 * MiB)
        hits: list[int] = []

        def corrupt_once(i: int, msg: data_pb2.Chunk) -> data_pb2.Chunk:
            if i == 2 and not hits:
                hits.append(msg.offset)
                msg.data = bytes([msg.data[0] ^ 0xFF]) + msg.data[1:]
            return msg

        a.data_servicer.fault = corrupt_once
        dest = tmp_path / "f.bin"
        client = DataClient(b, backoff=lambda n: 0.01, max_retries=3)
        res = await client.fetch(a.name, "f.bin", dest)
        assert hits and res.retries == 1 and res.sent_twice == 0
        assert sha(dest) == sha(src)

        def corrupt_always(i: int, msg: data_pb2.Chunk) -> data_pb2.Chunk:
            if msg.offset == MiB:
                msg.data = b"\0" * len(msg.data)
            return msg

        a.data_servicer.fault = corrupt_always
        dest2 = tmp_path / "g.bin"
        with pytest.raises(DataIntegrityError):
            await client.fetch(a.name, "f.bin", dest2)
        assert not dest2.exists()
        assert not list(tmp_path.glob("g.bin.zpart*"))

        # Without per-chunk digests the whole-file sha256 still catches it.
        def corrupt_no_digest(i: int, msg: data_pb2.Chunk) -> data_pb2.Chunk:
            if msg.offset == MiB:
                msg.data = b"\0" * len(msg.data)
                msg.chunk_digest = ""
            return msg

        a.data_servicer.fault = corrupt_no_digest
        with pytest.raises(DataIntegrityError):
            await client.fetch(a.name, "f.bin", dest2)
        assert not dest2.exists()
        assert a.datasvc.catalog.hashes_computed >= 1


async def test_slow_reader_holder_does_not_buffer_the_file(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2, configure=grpc_only) as (a, b):
        write_random(a.data_dir / "f.bin", 64 * MiB)
        produced: list[int] = []

        def count(i: int, m: data_pb2.Chunk) -> data_pb2.Chunk:
            produced.append(i)
            return m

        a.data_servicer.fault = count
        assert b.channels is not None
        s = data_pb2_grpc.DataStub(b.channels.get(a.address))
        offer = await s.Offer(data_pb2.OfferRequest(path="f.bin"))
        call = s.Fetch(data_pb2.FetchRequest(grant=offer.grant))
        first = await call.read()
        assert isinstance(first, data_pb2.Chunk) and len(first.data) == MiB
        await asyncio.sleep(1.0)  # a slow reader
        ahead = len(produced)
        call.cancel()
        assert ahead < 24, f"holder produced {ahead} chunks for a reader that took 1"
