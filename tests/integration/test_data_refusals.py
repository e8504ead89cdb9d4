"""Every refusal of the Data service is a precise status, and nothing is read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers.inproc import mesh
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.data.client import DataClient
from zambeze_mesh.errors import NotFound, NotPermitted
from zambeze_mesh.v1 import data_pb2, data_pb2_grpc

MiB = 1 << 20
DENIED = grpc.StatusCode.PERMISSION_DENIED


def stub(frm: Agent, to: Agent) -> data_pb2_grpc.DataStub:
    assert frm.channels is not None
    return data_pb2_grpc.DataStub(frm.channels.get(to.address))


async def code_of(coro: object) -> grpc.StatusCode:
    try:
        result = await coro  # type: ignore[misc]
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    raise AssertionError("call succeeded")


async def fetch_code(s: data_pb2_grpc.DataStub, req: data_pb2.FetchRequest) -> grpc.StatusCode:
    try:
        async for _ in s.Fetch(req):
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    raise AssertionError("fetch succeeded")


@pytest.fixture
def export(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    return d


async def test_offer_and_fetch_refusals(tmp_path: Path, export: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")

    def configure(i: int) -> dict[str, object]:
        grpc_only = {"transfer_methods": ["grpc-stream"]}  # tls-stream: test_data_tls.py
        return {"exported_roots": [str(export)], **grpc_only} if i == 0 else grpc_only

    async with mesh(tmp_path, 2, configure=configure) as (a, b):
        data = a.data_dir
        (data / "f.bin").write_bytes(os.urandom(3 * MiB))
        (data / "d").mkdir()
        (data / "d" / "in.txt").write_text("inside")
        os.symlink(secret, data / "d" / "escape")
        os.symlink(secret, data / "escape")
        os.mkfifo(data / "fifo")
        (export / "e.txt").write_text("exported")
        chunks: list[int] = []

        def count(i: int, m: data_pb2.Chunk) -> data_pb2.Chunk:
            chunks.append(i)
            return m

        a.data_servicer.fault = count
        svc = a.datasvc
        s = stub(b, a)

        async def offer_code(path: str, methods: list[str] | None = None) -> grpc.StatusCode:
            req = data_pb2.OfferRequest(path=path, methods=methods or [])
            return await code_of(s.Offer(req))

        hashed = svc.catalog.hashes_computed
        assert await offer_code("../secret.txt") == DENIED
        assert await offer_code("d/../../secret.txt") == DENIED
        assert await offer_code("escape") == DENIED  # symlink leaving the root
        assert await offer_code(str(secret)) == DENIED  # absolute outside the roots
        assert await offer_code("/dev/zero") == DENIED
        assert await offer_code("/etc/passwd") == DENIED
        assert await offer_code("fifo") == DENIED
        assert await offer_code("missing.bin") == grpc.StatusCode.NOT_FOUND
        assert await offer_code("") == grpc.StatusCode.INVALID_ARGUMENT
        assert await offer_code("a\x00b") == grpc.StatusCode.INVALID_ARGUMENT
        assert await offer_code("f.bin", ["Not A Method!"]) == grpc.StatusCode.INVALID_ARGUMENT
        assert svc.catalog.hashes_computed == hashed  # nothing was read

        # An exported root serves absolute paths; directories skip escaping symlinks.
        ok = await s.Offer(data_pb2.OfferRequest(path=str(export / "e.txt")))
        assert ok.info.size == len("exported") and ok.chosen == "grpc-stream"
        d_offer = await s.Offer(data_pb2.OfferRequest(path="d"))
        assert [e.relpath for e in d_offer.manifest] == ["in.txt"]

        offer = await s.Offer(data_pb2.OfferRequest(path="f.bin", methods=["rsync", "grpc-stream"]))
        assert offer.chosen == "grpc-stream" and list(offer.methods) == ["grpc-stream"]
        assert offer.info.sha256 == hashlib.sha256((data / "f.bin").read_bytes()).hexdigest()
        grant = offer.grant

        def req(
            g: data_pb2.Grant = grant, relpath: str = "", offset: int = 0
        ) -> data_pb2.FetchRequest:
            return data_pb2.FetchRequest(grant=g, relpath=relpath, offset=offset)

        # Replayed by another identity (agent a's own credentials, not b's).
        assert await fetch_code(stub(a, a), req()) == DENIED
        # A file grant used for something else.
        assert await fetch_code(s, req(relpath="in.txt")) == DENIED
        assert await fetch_code(s, req(relpath="../d/in.txt")) == DENIED
        # Tampered or garbage tokens.
        tampered = bytearray(grant.token)
        tampered[-40] ^= 1
        bad = data_pb2.Grant(token=bytes(tampered), expires_unix_ms=grant.expires_unix_ms)
        assert await fetch_code(s, req(g=bad)) == DENIED
        assert await fetch_code(s, req(g=data_pb2.Grant(token=b"x" * 80))) == DENIED
        assert await fetch_code(s, req(g=data_pb2.Grant())) == DENIED
        # Directory grant: relpaths must stay inside and be plain.
        dg = d_offer.grant
        assert await fetch_code(s, req(g=dg, relpath="../f.bin")) == DENIED
        assert await fetch_code(s, req(g=dg, relpath=str(data / "f.bin"))) == DENIED
        assert await fetch_code(s, req(g=dg, relpath="escape")) == DENIED
        assert await fetch_code(s, req(g=dg, relpath="")) == grpc.StatusCode.INVALID_ARGUMENT
        assert await fetch_code(s, req(g=dg, relpath="nope")) == grpc.StatusCode.NOT_FOUND
        assert await fetch_code(s, req(offset=3 * MiB + 1)) == grpc.StatusCode.INVALID_ARGUMENT
        # Expired.
        real_now = svc.now_ms
        svc.now_ms = lambda: real_now() + 11 * 60 * 1000
        assert await fetch_code(s, req()) == DENIED
        svc.now_ms = real_now
        assert chunks == []  # not one chunk was produced for any refused fetch

        # The grant is re-checked at use time: a vanished object is NOT_FOUND.
        good = [m async for m in s.Fetch(req(g=dg, relpath="in.txt"))]
        assert b"".join(m.data for m in good) == b"inside" and good[-1].last
        assert good[0].chunk_digest.startswith("crc32:")
        (data / "d" / "in.txt").unlink()
        assert await fetch_code(s, req(g=dg, relpath="in.txt")) == grpc.StatusCode.NOT_FOUND

        # The client raises the library errors.
        client = DataClient(b)
        with pytest.raises(NotPermitted):
            await client.fetch(a.name, "../secret.txt", tmp_path / "x")
        with pytest.raises(NotFound):
            await client.fetch("no-such-agent", "f.bin", tmp_path / "x")
        assert not (tmp_path / "x").exists()


async def test_stat_list_push(tmp_path: Path, export: Path) -> None:
    def configure(i: int) -> dict[str, object]:
        return {"exported_roots": [str(export)]} if i == 0 else {}

    async with mesh(tmp_path, 2, configure=configure) as (a, b):
        data = a.data_dir
        for i in range(5):
            (data / "many" / f"f{i}").parent.mkdir(exist_ok=True)
            (data / "many" / f"f{i}").write_text(str(i))
        (data / "many" / "sub").mkdir()
        client = DataClient(b)
        entries, truncated = await client.list(a.name, "many")
        assert not truncated and [e.path for e in entries] == [f"many/f{i}" for i in range(5)] + [
            "many/sub"
        ]
        assert entries[-1].is_dir
        entries, truncated = await client.list(a.name, "many", limit=2)
        assert truncated and len(entries) == 2
        info = await client.stat(a.name, "many/f3")
        assert info.size == 1 and info.sha256 == hashlib.sha256(b"3").hexdigest()

        local = tmp_path / "up.bin"
        local.write_bytes(os.urandom(2 * MiB + 5))
        res = await client.push(local, a.name, "incoming/up.bin")
        assert res.bytes == local.stat().st_size and res.skipped == 0
        assert (data / "incoming" / "up.bin").read_bytes() == local.read_bytes()
        assert (
            res.info is not None
            and res.info.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
        )
        res = await client.push(local, a.name, "incoming/up.bin")
        assert res.bytes == 0 and res.skipped == 1
        res = await client.push(local, a.name, str(export / "up.bin"))
        assert (export / "up.bin").read_bytes() == local.read_bytes()

        s = stub(b, a)

        async def push_code(msgs: list[data_pb2.PushChunk]) -> grpc.StatusCode:
            async def gen():  # type: ignore[no-untyped-def]
                for m in msgs:
                    yield m

            return await code_of(s.Push(gen()))

        good_sha = hashlib.sha256(b"hello").hexdigest()
        head: dict[str, Any] = {"size": 5, "sha256": good_sha}
        assert (
            await push_code([data_pb2.PushChunk(path="../evil", data=b"hello", **head)]) == DENIED
        )
        assert (
            await push_code([data_pb2.PushChunk(path="/tmp/evil", data=b"hello", **head)]) == DENIED
        )
        assert await push_code([data_pb2.PushChunk(path="", data=b"hello", **head)]) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        bad_sha = hashlib.sha256(b"other").hexdigest()
        assert (
            await push_code(
                [data_pb2.PushChunk(path="p.txt", size=5, sha256=bad_sha, data=b"hello")]
            )
            == grpc.StatusCode.DATA_LOSS
        )
        assert await push_code([data_pb2.PushChunk(path="p.txt", data=b"hello!", **head)]) == (
            grpc.StatusCode.DATA_LOSS
        )
        assert await push_code([data_pb2.PushChunk(path="p.txt", data=b"hel", **head)]) == (
            grpc.StatusCode.DATA_LOSS
        )
        assert (
            await push_code([data_pb2.PushChunk(path="p.txt", size=1 << 62, sha256=good_sha)])
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert not (data / "p.txt").exists() and not list(data.glob("p.txt.*"))
        assert await code_of(s.Stat(data_pb2.StatRequest(path="../x"))) == DENIED
        assert await code_of(s.List(data_pb2.ListRequest(path="/dev"))) == DENIED
