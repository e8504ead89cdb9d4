"""``zmesh agent stop`` ends the streams the agent serves instead of waiting them out.

Real agent processes: a monitor with a worker's ReportStream open to it (its activity
runs on the worker) and a client following the campaign with Watch and WatchBatches.
Stopping the monitor ends those streams with UNAVAILABLE at once (the gRPC grace
period is not waited out), logs no traceback, and loses nothing: the worker keeps its
unacknowledged events and delivers them once the monitor is back, and the campaign's
event stream from seq 0 is complete and gap-free.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc

from tests.helpers.procs import ProcMesh, dispatch_script
from zambeze_mesh.cli.daemon import process_alive
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

#: A generous bound: before streams were ended at stop, this took the full 5 s grace.
STOP_BOUND_S = 3.0

CAMPAIGN = """
import zambeze_mesh as zm
c = zm.Campaign("naps")
nap = zm.ShellActivity("nap", cmd="sleep 6", requires={"labels": {"role": "worker"}})
after = zm.ShellActivity(
    "after", cmd="true", depends_on=[nap], requires={"labels": {"role": "worker"}}
)
c.add_activities([nap, after])
print("CAMPAIGN", c.dispatch(), flush=True)
"""

# Follows the campaign with both Watch RPCs; prints how each call ended.
WATCHER = """
import asyncio, sys
import grpc
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc

async def drain(call):
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name

async def main(sock, cid):
    async with grpc.aio.insecure_channel("unix:" + sock) as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        req = campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
        calls = [stub.Watch(req), stub.WatchBatches(req)]
        for call in calls:
            await call.read()
        print("READY", flush=True)
        for code in await asyncio.gather(*(drain(c) for c in calls)):
            print("ENDED", code, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _events(sock: Path, cid: str, until_running: bool) -> list[common_pb2.Event]:
    """The campaign's events from seq 0: until ``nap`` runs, or until the campaign ends."""
    seen: list[common_pb2.Event] = []
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        req = campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
        async for ev in stub.Watch(req, timeout=90):
            seen.append(ev)
            if (
                until_running
                and ev.activity == "nap"
                and ev.state == common_pb2.ACTIVITY_STATE_RUNNING
            ):
                break
    return seen


def test_stop_ends_served_streams_promptly_and_loses_nothing(
    procmesh: ProcMesh, tmp_path: Path
) -> None:
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
    running = asyncio.run(_events(sock, cid, until_running=True))
    assert running[-1].agent == "w1"  # w1's report stream to mon is open now

    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(sock), cid], stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "READY"
        pid = mon.pid
        assert pid is not None
        t0 = time.monotonic()
        mon.stop()
        took = time.monotonic() - t0
        print(f"zmesh agent stop with 3 streams open: {took:.2f} s")
        assert pid is not None and not process_alive(pid)
        ended = watcher.communicate(timeout=30)[0].split("\n")
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(timeout=10)
    assert took < STOP_BOUND_S, f"agent stop took {took:.1f} s"
    # Both Watch calls were ended by the stopping agent, as "try again", not as done.
    assert [ln for ln in ended if ln.startswith("ENDED")] == ["ENDED UNAVAILABLE"] * 2
    for name in ("agent.out", "agent.log"):
        text = (mon.home / name).read_text()
        assert "Traceback" not in text and "CancelledError" not in text, f"{name}:\n{text[-4000:]}"

    # The worker finishes `nap` while mon is down; its events wait in its outbox.
    mon.start()
    events = asyncio.run(_events(sock, cid, until_running=False))
    assert [ev.seq for ev in events] == list(range(1, len(events) + 1))  # no gap from 0
    assert events[: len(running)] == running  # the journal kept what was seen before
    states = {(ev.activity, ev.state) for ev in events}
    for activity in ("nap", "after"):
        assert (activity, common_pb2.ACTIVITY_STATE_SUCCEEDED) in states, states
    final = events[-1]
    assert not final.activity and final.campaign_state == common_pb2.CAMPAIGN_STATE_SUCCEEDED
