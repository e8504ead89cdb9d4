"""The interceptor's handler wrapping, with a fake servicer context (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from zambeze_mesh.errors import Unauthenticated
from zambeze_mesh.security import (
    AuthorizationInterceptor,
    Identity,
    MeshCA,
    current_caller,
    der_to_pem,
)


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, peer: str = "ipv4:127.0.0.1:1", pem: bytes | None = None) -> None:
        self._peer = peer
        self._pem = pem
        self.written: list[Any] = []
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]} if self._pem else {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted(details)

    async def write(self, item: Any) -> None:
        self.written.append(item)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method


def _kind() -> str:
    caller = current_caller()
    assert caller is not None
    return caller.kind


async def _intercept(ca: MeshCA, method: str, handler: Any) -> Any:
    async def continuation(details: Any) -> Any:
        return handler

    return await AuthorizationInterceptor("alpha", ca.cert).intercept_service(
        continuation,
        Details(method),  # type: ignore[arg-type]
    )


def _pem(ca: MeshCA, identity: Identity) -> bytes:
    return der_to_pem(ca.issue(identity)[1])


async def test_unary_stream_async_generator(ca: MeshCA) -> None:
    async def watch(request: Any, context: Any) -> AsyncIterator[str]:
        yield request
        yield _kind()

    handler = await _intercept(
        ca, "/zambeze_mesh.v1.Campaigns/Watch", grpc.unary_stream_rpc_method_handler(watch)
    )
    ctx = FakeContext(peer="unix:/tmp/sock")
    got = [item async for item in handler.unary_stream("req", ctx)]
    assert got == ["req", "local"]
    assert current_caller() is None


async def test_stream_writer_coroutine_and_sync_generator(ca: MeshCA) -> None:
    async def writer(request: Any, context: Any) -> None:
        await context.write(_kind())

    def sync_gen(request: Any, context: Any) -> Iterator[str]:
        yield "x"
        yield _kind()

    agent_pem = _pem(ca, Identity.agent("alpha", "a1"))
    for behaviour, want in ((writer, ["agent"]), (sync_gen, ["x", "agent"])):
        handler = await _intercept(
            ca, "/zambeze_mesh.v1.Data/Fetch", grpc.unary_stream_rpc_method_handler(behaviour)
        )
        ctx = FakeContext(pem=agent_pem)
        assert await handler.unary_stream("req", ctx) is None
        assert ctx.written == want


async def test_stream_unary_and_stream_stream(ca: MeshCA) -> None:
    async def push(requests: Any, context: Any) -> str:
        return _kind()

    async def both(requests: Any, context: Any) -> AsyncIterator[str]:
        yield _kind()

    pem = _pem(ca, Identity.agent("alpha", "a1"))
    handler = await _intercept(
        ca, "/zambeze_mesh.v1.Data/Push", grpc.stream_unary_rpc_method_handler(push)
    )
    assert await handler.stream_unary(iter(()), FakeContext(pem=pem)) == "agent"
    handler = await _intercept(
        ca, "/zambeze_mesh.v1.Data/Push", grpc.stream_stream_rpc_method_handler(both)
    )
    assert [x async for x in handler.stream_stream(iter(()), FakeContext(pem=pem))] == ["agent"]


async def test_denied_before_behaviour_runs(ca: MeshCA, other_ca: MeshCA) -> None:
    ran: list[str] = []

    async def ping(request: Any, context: Any) -> str:
        ran.append("yes")
        return "ack"

    handler = await _intercept(
        ca, "/zambeze_mesh.v1.Membership/Ping", grpc.unary_unary_rpc_method_handler(ping)
    )
    ctx = FakeContext(pem=_pem(ca, Identity.client("alpha", "alice")))
    with pytest.raises(Aborted):
        await handler.unary_unary("req", ctx)
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.PERMISSION_DENIED

    ctx = FakeContext(pem=_pem(other_ca, Identity.agent("beta", "b1")))
    with pytest.raises(Aborted):
        await handler.unary_unary("req", ctx)
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.UNAUTHENTICATED

    ctx = FakeContext()
    with pytest.raises(Aborted):
        await handler.unary_unary("req", ctx)
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.UNAUTHENTICATED
    assert ran == []


async def test_unknown_method_passes_none_through(ca: MeshCA) -> None:
    assert await _intercept(ca, "/x.Y/Z", None) is None


def test_caller_of_foreign_mesh_is_unauthenticated(ca: MeshCA, other_ca: MeshCA) -> None:
    icpt = AuthorizationInterceptor("alpha", ca.cert)
    with pytest.raises(Unauthenticated):
        icpt.caller_of(FakeContext(pem=_pem(other_ca, Identity.agent("beta", "b1"))))
    assert icpt.caller_of(FakeContext()).kind == "anonymous"
    assert icpt.caller_of(FakeContext(peer="unix:/x")).kind == "local"
