"""TEST DOUBLE of the agent's ``Campaigns`` service — for client tests only.

It is NOT the real monitor: it accepts any submitted campaign and plays a scripted
sequence of events (each activity RUNNING then SUCCEEDED; a shell activity whose
cmd contains ``fail`` FAILS and everything after it is SKIPPED; a function
PythonActivity is really run here so its cloudpickled result round-trips). It can
break one Watch stream with UNAVAILABLE mid-way and hold the stream at a gate.
The server runs on its own event loop in its own thread, like a separate agent
process, so tests may block their own loop with the client's sync API.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cloudpickle
import grpc

from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

A = common_pb2
RUNNING, SUCCEEDED, FAILED, SKIPPED = (
    A.ACTIVITY_STATE_RUNNING,
    A.ACTIVITY_STATE_SUCCEEDED,
    A.ACTIVITY_STATE_FAILED,
    A.ACTIVITY_STATE_SKIPPED,
)


def script_events(cid: str, req: campaigns_pb2.SubmitRequest) -> list[common_pb2.Event]:
    """The scripted event sequence of one campaign (seq 1..N, no gaps)."""
    now = int(time.time() * 1000)
    evs: list[common_pb2.Event] = []

    def add(**kw: Any) -> None:
        evs.append(common_pb2.Event(seq=len(evs) + 1, campaign_id=cid, time_unix_ms=now, **kw))

    add(campaign_state=A.CAMPAIGN_STATE_RUNNING, message="accepted")
    failed = False
    for i, spec in enumerate(req.activities):
        agent = f"agent-{i % 2}"
        if failed:
            add(activity=spec.name, state=SKIPPED, message="an upstream activity failed")
            continue
        add(activity=spec.name, state=RUNNING, attempt=1, agent=agent)
        if spec.WhichOneof("body") == "shell" and "fail" in spec.shell.cmd:
            failed = True
            add(
                activity=spec.name,
                state=FAILED,
                attempt=1,
                agent=agent,
                message="exit code 2",
                detail={"exit_code": "2", "stderr_tail": "boom: no such file\n"},
            )
            continue
        result = b""
        if spec.WhichOneof("body") == "python" and spec.python.function:
            func, args, kwargs = cloudpickle.loads(spec.python.function)
            result = cloudpickle.dumps(func(*args, **kwargs))
        add(
            activity=spec.name,
            state=SUCCEEDED,
            attempt=1,
            agent=agent,
            detail={"exit_code": "0", "stdout_tail": f"{spec.name} done\n"},
            result=result,
        )
    final = A.CAMPAIGN_STATE_FAILED if failed else A.CAMPAIGN_STATE_SUCCEEDED
    add(campaign_state=final, message="1 activity failed" if failed else "")
    return evs


class FakeCampaigns(campaigns_pb2_grpc.CampaignsServicer):
    """Scripted test double of the Campaigns service (see the module docstring)."""

    def __init__(self) -> None:
        self.submits: list[campaigns_pb2.SubmitRequest] = []
        self.watches: list[tuple[str, int]] = []
        self.batched_watches = 0  # how many of them came through WatchBatches
        self.cancels: list[str] = []
        self.events: dict[str, list[common_pb2.Event]] = {}
        self.names: dict[str, str] = {}
        self.requests: dict[str, campaigns_pb2.SubmitRequest] = {}
        self.reject: tuple[grpc.StatusCode, str] | None = None
        self.break_at_seq: int | None = None  # abort once with UNAVAILABLE after this seq
        self.gate_after_seq: int | None = None  # hold streams after this seq until gate is set
        self.gate = threading.Event()
        self.delay = 0.0
        self.always_unavailable = False  # every Watch fails at once
        self._by_request: dict[str, str] = {}

    async def Submit(
        self, request: campaigns_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.SubmitResponse:
        if self.reject is not None:
            await context.abort(*self.reject)
        self.submits.append(request)
        if request.client_request_id in self._by_request:
            cid = self._by_request[request.client_request_id]
        else:
            cid = f"c{len(self.events) + 1}"
            self._by_request[request.client_request_id] = cid
            self.events[cid] = script_events(cid, request)
            self.names[cid] = request.name
            self.requests[cid] = request
        return campaigns_pb2.SubmitResponse(campaign_id=cid, monitor="agent-0")

    def _visible(self, cid: str) -> list[common_pb2.Event]:
        evs = self.events[cid]
        if self.gate_after_seq is not None and not self.gate.is_set():
            return evs[: self.gate_after_seq]
        return evs

    async def Watch(
        self, request: campaigns_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Event]:
        cid = request.campaign_id
        if cid not in self.events:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no campaign {cid!r}")
        self.watches.append((cid, request.after_seq))
        if self.always_unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "link down")
        for ev in self.events[cid]:
            if ev.seq <= request.after_seq:
                continue
            while self.gate_after_seq is not None and ev.seq > self.gate_after_seq:
                if self.gate.is_set():
                    break
                await asyncio.sleep(0.01)
            if self.delay:
                await asyncio.sleep(self.delay)
            yield ev
            if self.break_at_seq is not None and ev.seq == self.break_at_seq:
                self.break_at_seq = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "simulated link loss")

    async def WatchBatches(
        self, request: campaigns_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[campaigns_pb2.EventBatch]:
        """Watch's events, one per batch (the client must not depend on batch sizes)."""
        self.batched_watches += 1
        async for ev in self.Watch(request, context):
            yield campaigns_pb2.EventBatch(events=[ev])

    async def Get(
        self, request: campaigns_pb2.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.CampaignStatus:
        return self._status(request.campaign_id) or await context.abort(
            grpc.StatusCode.NOT_FOUND, f"no campaign {request.campaign_id!r}"
        )

    def _status(self, cid: str) -> campaigns_pb2.CampaignStatus | None:
        if cid not in self.events:
            return None
        st = campaigns_pb2.CampaignStatus(campaign_id=cid, name=self.names[cid], monitor="agent-0")
        rows: dict[str, campaigns_pb2.ActivityStatus] = {}
        for spec in self.requests[cid].activities:
            rows[spec.name] = campaigns_pb2.ActivityStatus(
                name=spec.name, state=A.ACTIVITY_STATE_PENDING
            )
        for ev in self._visible(cid):
            st.last_seq = ev.seq
            if not ev.activity:
                st.state = ev.campaign_state
                continue
            row = rows[ev.activity]
            row.state, row.attempt, row.agent, row.message = (
                ev.state,
                ev.attempt,
                ev.agent,
                ev.message,
            )
            row.detail.clear()
            row.detail.update(ev.detail)
            row.result = ev.result
        st.activities.extend(rows.values())
        return st

    async def Cancel(
        self, request: campaigns_pb2.CancelCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.CampaignStatus:
        self.cancels.append(request.campaign_id)
        st = self._status(request.campaign_id)
        if st is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such campaign")
        assert st is not None
        st.state = A.CAMPAIGN_STATE_CANCELLED
        return st

    async def ListCampaigns(
        self, request: campaigns_pb2.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListCampaignsResponse:
        sts = [self._status(cid) for cid in reversed(list(self.events))]
        return campaigns_pb2.ListCampaignsResponse(campaigns=[s for s in sts if s is not None])

    async def ListMembers(
        self, request: campaigns_pb2.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> campaigns_pb2.ListMembersResponse:
        resp = campaigns_pb2.ListMembersResponse(mesh="testmesh", self_name="agent-0")
        resp.members.add(
            name="agent-0",
            address="127.0.0.1:1",
            status=A.MEMBER_STATUS_ALIVE,
            incarnation=3,
            is_self=True,
            capabilities=common_pb2.Capabilities(plugins=["shell", "python"], slots=4),
        )
        return resp


class ServerThread:
    """Runs a grpc.aio server with the fake service on its own loop in a thread."""

    def __init__(
        self,
        servicer: FakeCampaigns,
        socket_path: Path | None = None,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        """Listen on ``socket_path`` (insecure) or, with ``credentials``, 127.0.0.1:<free>."""
        self.servicer = servicer
        self._credentials = credentials
        self.target = f"unix:{socket_path}" if socket_path is not None else "127.0.0.1:0"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server: Any = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> Any:
        server = grpc.aio.server()
        campaigns_pb2_grpc.add_CampaignsServicer_to_server(self.servicer, server)
        if self._credentials is None:
            server.add_insecure_port(self.target)
        else:
            port = server.add_secure_port(self.target, self._credentials)
            self.target = f"127.0.0.1:{port}"
        await server.start()
        return server

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
