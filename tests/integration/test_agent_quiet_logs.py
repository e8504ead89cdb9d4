"""Ordinary stream cancellations and a clean stop leave no traceback in an agent's logs.

Real agent processes: a Watch and a WatchBatches cancelled by their client and dropped
by a client process killed with SIGKILL, a contractor killed while it reports over its
ReportStream, and a peer's report stream still open when the monitor stops (gRPC ends
that call only after the grace period, in tasks that outlive the server).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import grpc

from tests.helpers.creds import home_credentials
from tests.helpers.procs import ProcAgent, ProcMesh, dispatch_script
from zambeze_mesh.cli.daemon import process_alive
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2, scheduling_pb2_grpc

CAMPAIGN = """
import zambeze_mesh as zm
c = zm.Campaign("naps")
c.add_activities([
    zm.ShellActivity("nap", cmd="sleep 60", requires={"labels": {"role": "worker"}}),
])
print("CAMPAIGN", c.dispatch(), flush=True)
"""

# A client that follows the campaign with both Watch RPCs until it is killed.
WATCHER = """
import asyncio, sys
import grpc
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc

async def main(sock, cid):
    async with grpc.aio.insecure_channel("unix:" + sock) as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        req = campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
        calls = [stub.Watch(req), stub.WatchBatches(req)]
        for call in calls:
            await call.read()
        print("READY", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _until_running(sock: Path, cid: str) -> str:
    """Follow the campaign until its activity runs; the agent that runs it."""
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        req = campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
        async for ev in stub.Watch(req, timeout=60):
            if ev.activity == "nap" and ev.state == common_pb2.ACTIVITY_STATE_RUNNING:
                return ev.agent
    raise AssertionError("the campaign ended before its activity ran")


async def _cancel_watches(sock: Path, cid: str) -> None:
    """Watch and WatchBatches, each read once and then cancelled by the client."""
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        req = campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
        for call in (stub.Watch(req), stub.WatchBatches(req)):
            assert await call.read() is not grpc.aio.EOF
            assert call.cancel()
        await asyncio.sleep(0.5)  # the agent sees the cancellations


async def _idle_reports(
    target: str, creds: grpc.ChannelCredentials, n: int
) -> AsyncGenerator[None, None]:
    """Hold ``n`` ReportStreams of a contractor open (sending nothing) while the caller runs."""
    opts = [("grpc.ssl_target_name_override", "mon")]
    async with grpc.aio.secure_channel(target, creds, options=opts) as ch:
        stop = asyncio.Event()

        async def nothing() -> AsyncIterator[object]:
            await stop.wait()
            return
            yield  # an async generator

        stub = scheduling_pb2_grpc.SchedulingStub(ch)
        calls = [stub.ReportStream(nothing()) for _ in range(n)]
        await asyncio.sleep(0.5)  # the calls reached the agent
        assert not any(call.done() for call in calls)
        yield None
        stop.set()


def _assert_quiet(agent: ProcAgent) -> None:
    for name in ("agent.out", "agent.log"):
        text = (agent.home / name).read_text()
        assert "Traceback" not in text and "CancelledError" not in text, f"{name}:\n{text[-4000:]}"
    assert '"event": "agent.started"' in (agent.home / "agent.log").read_text()


def _stop(agent: ProcAgent) -> None:
    pid = agent.pid
    assert pid is not None
    agent.stop()
    assert not process_alive(pid)


def test_peer_cancellations_log_no_traceback(procmesh: ProcMesh, tmp_path: Path) -> None:
    mon = procmesh.init("mon")
    mon.start()
    worker = procmesh.join("w1", mon, "--label", "role=worker")
    worker.start()
    procmesh.wait_for(
        lambda: set(mon.statuses().values()) == {"alive"} and len(mon.statuses()) == 2,
        what="w1 to join",
    )
    sock = mon.home / "agent.sock"
    cid = dispatch_script(tmp_path, mon.home, CAMPAIGN)
    assert asyncio.run(_until_running(sock, cid)) == "w1"

    asyncio.run(_cancel_watches(sock, cid))  # cancelled by the client
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(sock), cid],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "READY"
    finally:
        watcher.send_signal(signal.SIGKILL)  # the client goes away without a word
        watcher.wait(timeout=10)

    worker.kill9()  # the contractor, and its report stream to mon, dies
    procmesh.wait_for(lambda: mon.statuses()["w1"] in ("suspect", "dead"), what="w1 suspected")
    _stop(mon)
    _assert_quiet(mon)


def test_stop_with_a_peer_stream_open_logs_no_traceback(procmesh: ProcMesh) -> None:
    """The server ends a stream still open after the grace period in tasks of its own:
    the agent's process must let them end before it exits."""
    mon = procmesh.init("mon")
    mon.start()
    peer = procmesh.join("w1", mon)  # its identity only; not started

    async def stop_with_open_report_stream() -> None:
        reports = _idle_reports(mon.address, home_credentials(peer.home), 4)
        await anext(reports)
        await asyncio.to_thread(_stop, mon)
        await reports.aclose()

    asyncio.run(stop_with_open_report_stream())
    _assert_quiet(mon)
