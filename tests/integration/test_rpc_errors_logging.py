"""Real errors in a servicer are still logged with their traceback; a client cancelling a
stream is not an error. A real gRPC aio server on 127.0.0.1 with handlers wrapped in
:func:`rpc_errors`, as every servicer of the agent is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from zambeze_mesh.agent.servicers.errors import rpc_errors


class Servicer:
    @rpc_errors
    async def Boom(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("a real bug")

    @rpc_errors
    async def BoomStream(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError("a real bug in a stream")

    @rpc_errors
    async def Ticks(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        while True:
            yield b"tick"
            await asyncio.sleep(0.01)

    @rpc_errors
    async def Pour(self, request: bytes, context: grpc.aio.ServicerContext) -> None:
        """Writes with ``context.write``, as ``Data.Fetch`` does (idle timeout included)."""
        while True:
            await asyncio.wait_for(context.write(b"x" * 65536), 5)


class Handlers(grpc.GenericRpcHandler):
    def __init__(self, svc: Servicer) -> None:
        self.svc = svc

    def service(self, details: Any) -> Any:
        name = details.method.rsplit("/", 1)[-1]
        if name == "Boom":
            return grpc.unary_unary_rpc_method_handler(self.svc.Boom)
        if name in ("BoomStream", "Ticks", "Pour"):
            return grpc.unary_stream_rpc_method_handler(getattr(self.svc, name))
        return None


async def _serve() -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Handlers(Servicer()),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_a_servicer_bug_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server, channel = await _serve()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/t.T/Boom")(b"")
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "a real bug" in (info.value.details() or "")
        call = channel.unary_stream("/t.T/BoomStream")(b"")
        assert await call.read() == b"first"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.INTERNAL
    finally:
        await channel.close()
        await server.stop(None)
    logged = [r for r in caplog.records if r.getMessage() == "rpc.internal_error"]
    assert len(logged) == 2 and all(r.exc_info and r.levelno == logging.ERROR for r in logged)
    assert {str(r.exc_info[1]) for r in logged if r.exc_info} == {
        "a real bug",
        "a real bug in a stream",
    }


async def test_a_stream_the_client_cancels_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server, channel = await _serve()
    try:
        calls = [channel.unary_stream("/t.T/Ticks")(b"") for _ in range(3)]
        for call in calls:
            assert await call.read() == b"tick"
        for call in calls:
            assert call.cancel()
        await asyncio.sleep(0.3)  # the server sees the cancellations
        open_call = channel.unary_stream("/t.T/Ticks")(b"")
        assert await open_call.read() == b"tick"
    finally:
        await server.stop(0.2)  # ends the open stream after its grace period
        await asyncio.sleep(0.3)
        await channel.close()
    assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)]


async def test_a_writer_whose_client_cancels_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """The write under way when the client cancels fails inside gRPC (ExecuteBatchError,
    often winning over the CancelledError): that is the call ending, not a bug."""
    caplog.set_level(logging.INFO)
    server, channel = await _serve()
    try:
        for _ in range(30):
            call = channel.unary_stream("/t.T/Pour")(b"")
            for _ in range(3):
                assert len(await call.read()) == 65536
            assert call.cancel()
        await asyncio.sleep(0.5)  # the server sees the cancellations
    finally:
        await channel.close()
        await server.stop(None)
    assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)][:3]
