"""``tls-stream``: the TLS data port beside gRPC, between in-process agents (real
sockets, real mTLS with throwaway CAs, real files)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

import pytest

from tests.helpers.files import sha, write_random
from tests.helpers.inproc import mesh, wait_until
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.data import tlsfetch, tlsrecv
from zambeze_mesh.data.client import DataClient
from zambeze_mesh.data.tlswire import (
    CHECKS,
    ERROR_LEN,
    FRAME,
    MAGIC,
    RangeRequest,
    client_context,
    read_json,
    recv_exact,
    write_json,
)
from zambeze_mesh.errors import DataIntegrityError, Unavailable
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.keys import der_to_pem, key_to_pem
from zambeze_mesh.v1 import data_pb2, data_pb2_grpc

MiB = 1 << 20


def pems(agent: Agent) -> tuple[bytes, bytes, bytes]:
    ident = agent.identity
    assert ident is not None
    return ident.key_pem, der_to_pem(ident.cert_der), der_to_pem(ident.ca_cert_der)


def data_port(agent: Agent) -> int:
    assert agent.data_listener is not None
    return agent.data_listener.port


def no_parts(d: Path) -> bool:
    return not [p for p in d.rglob("*") if ".zpart" in p.name]


async def test_both_ends_have_it_it_is_used_striped_and_resumable(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as (a, b):
        src = write_random(a.data_dir / "big.bin", 21 * MiB + 5)
        tree = a.data_dir / "tree"
        for i in range(5):
            write_random(tree / f"f{i}.bin", 300_000 + i)
        write_random(tree / "sub" / "y.bin", 2 * MiB)
        (tree / "empty.txt").write_bytes(b"")
        conns: list[int] = []
        a.tls_data_fault = lambda i, off, data: conns.append(off) if i == 0 else None  # type: ignore[attr-defined]
        tlsfetch_min = tlsfetch.STRIPE_MIN
        tlsfetch.STRIPE_MIN = 8 * MiB  # stripe this 21 MiB file (4 MiB frames)
        try:
            client = DataClient(b, transfer_streams=3)
            seen: list[tuple[int, int]] = []
            dest = tmp_path / "got" / "big.bin"
            res = await client.fetch(
                a.name, "big.bin", dest, on_progress=lambda d, t: seen.append((d, t))
            )
        finally:
            tlsfetch.STRIPE_MIN = tlsfetch_min
        assert res.method == "tls-stream" and res.streams == 3 and res.fallback_from == ""
        assert sha(dest) == sha(src) and res.bytes == src.stat().st_size and res.sent_twice == 0
        assert sorted(conns) == [0, 4 * MiB, 8 * MiB]  # three stripes: frames 0, 1, 2 first
        assert seen[-1] == (src.stat().st_size,) * 2
        assert no_parts(dest.parent)

        again = await client.fetch(a.name, "big.bin", dest)
        assert again.bytes == 0 and again.skipped == 1

        out = tmp_path / "got" / "tree"
        res = await client.fetch(a.name, "tree", out)
        assert res.method == "tls-stream" and res.files == 7 and res.streams == 3
        for p in tree.rglob("*"):
            if p.is_file():
                assert sha(out / p.relative_to(tree)) == sha(p)


async def test_crc32c_is_used_when_both_ends_have_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requester offers every checksum it has, best first (CRC-32C is several times
    cheaper than zlib's CRC-32), and the holder answers with the first it has too."""
    used: list[str] = []

    class Recording(tlsrecv.StripedReceive):
        def run(self) -> tlsrecv.RangeStats:
            try:
                return super().run()
            finally:
                used.append(self.check)

    monkeypatch.setattr(tlsfetch, "StripedReceive", Recording)
    async with mesh(tmp_path, 2) as (a, b):
        src = write_random(a.data_dir / "f.bin", 9 * MiB + 3)
        dest = tmp_path / "f.bin"
        res = await DataClient(b, transfer_streams=1).fetch(a.name, "f.bin", dest)
        assert res.method == "tls-stream" and sha(dest) == sha(src)
    assert "crc32c" in CHECKS and used == ["crc32c"]


async def test_broken_connection_resumes_from_the_last_verified_frame(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as (a, b):
        src = write_random(a.data_dir / "f.bin", 18 * MiB + 7)
        broken: list[int] = []

        def fault(i: int, off: int, data: memoryview) -> None:
            if i == 3 and not broken:
                broken.append(off)
                raise ConnectionResetError("injected: connection broken")

        a.tls_data_fault = fault  # type: ignore[attr-defined]
        dest = tmp_path / "f.bin"
        client = DataClient(b, backoff=lambda n: 0.01, transfer_streams=1)
        res = await client.fetch(a.name, "f.bin", dest)
        assert res.method == "tls-stream"
        assert broken == [12 * MiB]
        assert res.retries == 1
        assert res.sent_twice == 0  # frames received before the break were kept
        assert res.bytes == src.stat().st_size
        assert sha(dest) == sha(src)


async def test_corrupted_frame_is_detected_refetched_and_never_installed(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as (a, b):
        src = write_random(a.data_dir / "f.bin", 10 * MiB)
        hits: list[int] = []

        def corrupt_once(i: int, off: int, data: memoryview) -> None:
            if i == 1 and not hits:
                hits.append(off)
                data[100] ^= 0xFF  # after the checksum was computed

        a.tls_data_fault = corrupt_once  # type: ignore[attr-defined]
        client = DataClient(b, backoff=lambda n: 0.01, max_retries=3, transfer_streams=1)
        dest = tmp_path / "one" / "f.bin"
        res = await client.fetch(a.name, "f.bin", dest)
        assert hits == [4 * MiB] and res.retries == 1 and res.method == "tls-stream"
        assert sha(dest) == sha(src)

        def corrupt_always(i: int, off: int, data: memoryview) -> None:
            data[0] ^= 1

        a.tls_data_fault = corrupt_always  # type: ignore[attr-defined]
        dest = tmp_path / "two" / "f.bin"
        with pytest.raises(DataIntegrityError):
            await client.fetch(a.name, "f.bin", dest)
        assert not dest.exists() and no_parts(dest.parent)


def handshake(ctx: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def ask(ctx: ssl.SSLContext, port: int, req: RangeRequest) -> dict[str, object]:
    """One data request; the holder's answer (refusals are JSON answers)."""
    with handshake(ctx, port) as conn:
        write_json(conn, req.to_json(), prefix=MAGIC)
        answer = read_json(conn)
        assert isinstance(answer, dict)
        if answer.get("ok"):
            head = bytearray(FRAME.size)
            recv_exact(conn, memoryview(head))
            assert FRAME.unpack(head)[1] != ERROR_LEN
        return answer


def refused_in_handshake(ctx: ssl.SSLContext, port: int) -> bool:
    """Whether the holder ends the connection before any answer (TLS 1.3: the client
    learns of the refused certificate on its first read)."""
    try:
        with handshake(ctx, port) as conn:
            conn.sendall(MAGIC + b"\0\0\0\2{}")
            return conn.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True


async def test_data_port_refusals(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    async with mesh(tmp_path, 2) as (a, b):
        data = a.data_dir
        write_random(data / "f.bin", 3 * MiB)
        (data / "d").mkdir()
        (data / "d" / "in.txt").write_text("inside")
        (tmp_path / "outside.txt").write_text("outside")
        os.symlink(secret, data / "d" / "escape")
        os.mkfifo(data / "d" / "fifo")
        os.symlink("/dev/zero", data / "d" / "zero")
        sent: list[int] = []
        a.tls_data_fault = lambda i, off, d: sent.append(off)  # type: ignore[attr-defined]
        port = data_port(a)
        assert b.channels is not None
        stub = data_pb2_grpc.DataStub(b.channels.get(a.address))
        f_offer = await stub.Offer(data_pb2.OfferRequest(path="f.bin", methods=["tls-stream"]))
        d_offer = await stub.Offer(data_pb2.OfferRequest(path="d", methods=["tls-stream"]))
        assert f_offer.chosen == "tls-stream" and f_offer.method_params["port"] == str(port)
        bctx = client_context(*pems(b))

        def req(grant: bytes, relpath: str = "", end: int = 0) -> RangeRequest:
            return RangeRequest(grant, relpath, 0, end)

        def code(ctx: ssl.SSLContext, r: RangeRequest) -> object:
            return ask(ctx, port, r).get("code")

        fg, dg = f_offer.grant.token, d_offer.grant.token
        # A grant used by another identity (agent a's own certificate, not b's).
        assert code(client_context(*pems(a)), req(fg)) == "PERMISSION_DENIED"
        # Traversal, absolute paths, symlink escapes, FIFOs and device files.
        for rel in ("../f.bin", "../../outside.txt", str(secret), "escape", "fifo", "zero"):
            assert code(bctx, req(dg, rel)) == "PERMISSION_DENIED", rel
        assert code(bctx, req(fg, "in.txt")) == "PERMISSION_DENIED"  # file grant, relpath
        tampered = bytearray(fg)
        tampered[-40] ^= 1
        assert code(bctx, req(bytes(tampered))) == "PERMISSION_DENIED"
        assert code(bctx, req(b"x" * 80)) == "PERMISSION_DENIED"
        assert code(bctx, req(fg, end=3 * MiB + 1)) == "INVALID_ARGUMENT"  # past the end
        svc = a.datasvc
        real_now = svc.now_ms
        svc.now_ms = lambda: real_now() + 11 * 60 * 1000
        assert code(bctx, req(fg, end=10)) == "PERMISSION_DENIED"  # expired
        svc.now_ms = real_now
        assert sent == []  # not one frame left the holder

        # No client certificate, or one of another CA (even with the same name):
        # refused in the handshake, before any request is read.
        listener = a.data_listener
        assert listener is not None
        before = listener.refused
        anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anon.load_verify_locations(cadata=pems(a)[2].decode())
        assert refused_in_handshake(anon, port)
        other = MeshCA.create("test")
        key, cert_der = other.issue(Identity.agent("test", b.name), ["127.0.0.1"])
        foreign = client_context(key_to_pem(key), der_to_pem(cert_der), pems(a)[2])
        assert refused_in_handshake(foreign, port)
        await wait_until(lambda: listener.refused == before + 2, 10, "both handshakes refused")
        assert sent == []

        # The right identity and grant still work.
        ok = ask(bctx, port, req(dg, "in.txt", end=6))
        assert ok["ok"] is True and ok["size"] == 6


async def test_per_peer_limit_and_idle_timeout(tmp_path: Path) -> None:
    cfg = {"max_streams_per_peer": 1, "stream_idle_timeout_s": 0.5}
    async with mesh(tmp_path, 2, configure=lambda i: cfg if i == 0 else {}) as (a, b):
        write_random(a.data_dir / "f.bin", 64 * MiB)
        assert b.channels is not None
        stub = data_pb2_grpc.DataStub(b.channels.get(a.address))
        offer = await stub.Offer(data_pb2.OfferRequest(path="f.bin", methods=["tls-stream"]))
        ctx = client_context(*pems(b))
        port = data_port(a)
        r = RangeRequest(offer.grant.token, "", 0, 64 * MiB)
        with handshake(ctx, port) as slow:  # reads nothing after the answer
            write_json(slow, r.to_json(), prefix=MAGIC)
            assert read_json(slow)["ok"] is True
            assert ask(ctx, port, r)["code"] == "RESOURCE_EXHAUSTED"
            # The holder gives up on the idle reader: the connection ends early.
            await asyncio.sleep(3)
            slow.settimeout(30)
            got = 0
            try:
                while chunk := slow.recv(1 << 20):
                    got += len(chunk)
            except (ssl.SSLError, ConnectionError):
                pass
            assert got < 64 * MiB
        assert ask(ctx, port, r)["ok"] is True  # the slot was given back


async def test_negotiation_falls_back_to_grpc_stream(tmp_path: Path) -> None:
    grpc_only = {"transfer_methods": ["grpc-stream"]}
    async with mesh(tmp_path, 3, configure=lambda i: grpc_only if i == 2 else {}) as agents:
        a, b, c = agents
        src = write_random(a.data_dir / "f.bin", 2 * MiB)
        write_random(c.data_dir / "g.bin", MiB)
        assert c.data_listener is None
        # Holder without tls-stream.
        res = await DataClient(b).fetch(c.name, "g.bin", tmp_path / "1" / "g.bin")
        assert res.method == "grpc-stream" and res.fallback_from == ""
        # Requester without tls-stream.
        res = await DataClient(c).fetch(a.name, "f.bin", tmp_path / "2" / "f.bin")
        assert res.method == "grpc-stream" and res.fallback_from == ""
        # Both have it, but the data port does not answer: grpc-stream moves the bytes.
        listener = a.data_listener
        assert listener is not None
        listener.close()
        res = await DataClient(b).fetch(a.name, "f.bin", tmp_path / "3" / "f.bin")
        assert res.method == "grpc-stream" and res.fallback_from == "tls-stream"
        assert sha(tmp_path / "3" / "f.bin") == sha(src)


def test_unreachable_port_raises_unavailable() -> None:
    ctx = client_context(*_throwaway_pems())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(Unavailable):
            tlsfetch.connector(ctx, "127.0.0.1", port)()


def _throwaway_pems() -> tuple[bytes, bytes, bytes]:
    ca = MeshCA.create("t")
    key, der = ca.issue(Identity.agent("t", "x"), ["127.0.0.1"])
    return key_to_pem(key), der_to_pem(der), ca.cert_pem
