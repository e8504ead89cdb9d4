"""Attacks on scheduling scope, campaign ownership and execution policy.

A member is trusted to run what it is awarded and to report on its own work,
nothing more: scheduling calls about an activity are honoured only from that
activity's monitor. A client sees and controls only its own campaigns. Each test
names what it injects and what it checks, over real gRPC and real mTLS between
agents in one process (``tests/helpers/inproc.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from tests.helpers.creds import home_credentials
from tests.helpers.inproc import mesh
from tests.helpers.procs import ProcAgent, ProcMesh
from tests.system.test_attacks import as_agent, code_of, local, shell, still_serving
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.bootstrap import issue_client, open_store
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.v1 import (
    campaigns_pb2,
    campaigns_pb2_grpc,
    common_pb2,
    data_pb2,
    data_pb2_grpc,
    scheduling_pb2,
    scheduling_pb2_grpc,
)

S = common_pb2


async def _state_of(
    stub: campaigns_pb2_grpc.CampaignsStub, cid: str, name: str
) -> campaigns_pb2.ActivityStatus:
    status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=5)
    return next(a for a in status.activities if a.name == name)


async def _wait_state(
    stub: campaigns_pb2_grpc.CampaignsStub, cid: str, name: str, state: int, timeout: float = 20
) -> campaigns_pb2.ActivityStatus:
    deadline = time.monotonic() + timeout
    while True:
        act = await _state_of(stub, cid, name)
        if act.state == state:
            return act
        assert time.monotonic() < deadline, f"{name} never reached {state}: {act}"
        await asyncio.sleep(0.05)


async def _final(stub: campaigns_pb2_grpc.CampaignsStub, cid: str) -> campaigns_pb2.CampaignStatus:
    async for ev in stub.Watch(
        campaigns_pb2.WatchRequest(campaign_id=cid, follow=True), timeout=60
    ):
        if ev.campaign_state in (
            S.CAMPAIGN_STATE_SUCCEEDED,
            S.CAMPAIGN_STATE_FAILED,
            S.CAMPAIGN_STATE_CANCELLED,
        ):
            break
    return await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=5)


async def test_foreign_cancel_is_refused(tmp_path: Path) -> None:
    """Inject: agent-2 calls Scheduling.Cancel{monitor: agent-2} on agent-1 for an
    activity of agent-0's campaign that agent-1 is running (exact attempt, and
    attempt 0 = any). Check: nothing is cancelled (``cancelled`` = 0), the activity
    keeps running and ends SUCCEEDED with its output; the real monitor's own
    cancel still works on another activity."""
    async with mesh(tmp_path, 3) as (a0, a1, a2):
        async with local(a0) as ch0, as_agent(a2, a1) as ch:
            camp = campaigns_pb2_grpc.CampaignsStub(ch0)
            resp = await camp.Submit(
                campaigns_pb2.SubmitRequest(
                    name="victim",
                    activities=[shell("slow", "sleep 2; echo done", agent="agent-1")],
                ),
                timeout=5,
            )
            cid = resp.campaign_id
            running = await _wait_state(camp, cid, "slow", S.ACTIVITY_STATE_RUNNING)
            sched = scheduling_pb2_grpc.SchedulingStub(ch)
            for attempt in (running.attempt, 0):
                answer = await sched.Cancel(
                    scheduling_pb2.CancelActivitiesRequest(
                        monitor=a2.name,
                        activities=[
                            scheduling_pb2.ActivityRef(
                                campaign_id=cid, activity="slow", attempt=attempt
                            )
                        ],
                    ),
                    timeout=5,
                )
                assert answer.cancelled == 0
            final = await _final(camp, cid)
            assert final.state == S.CAMPAIGN_STATE_SUCCEEDED, final
            act = final.activities[0]
            assert act.agent == "agent-1"
            assert "done" in act.detail["stdout_tail"]

            # The monitor itself may still cancel its own work there.
            resp2 = await camp.Submit(
                campaigns_pb2.SubmitRequest(
                    name="own", activities=[shell("long", "sleep 30", agent="agent-1")]
                ),
                timeout=5,
            )
            await _wait_state(camp, resp2.campaign_id, "long", S.ACTIVITY_STATE_RUNNING)
            await camp.Cancel(
                campaigns_pb2.CancelCampaignRequest(campaign_id=resp2.campaign_id), timeout=5
            )
            final2 = await _final(camp, resp2.campaign_id)
            assert final2.state == S.CAMPAIGN_STATE_CANCELLED
        await still_serving(a1)


async def test_award_squatting_is_isolated(tmp_path: Path) -> None:
    """Inject: before agent-0 places activity ``second`` of its campaign (it waits on
    ``first``), agent-2 sends Scheduling.Award{monitor: agent-2} to agent-1 for the
    same (campaign, activity, attempt) with its own command, which writes a marker
    into its working dir. Check: agent-1 takes it as agent-2's own job; the real
    award is then accepted as a separate job (held until the squatter's run ends)
    and runs to SUCCEEDED with the real command's output; the attacker's marker is
    not in the real activity's working dir, and the campaign completes."""
    async with mesh(tmp_path, 3) as (a0, a1, a2):
        async with local(a0) as ch0, as_agent(a2, a1) as ch:
            camp = campaigns_pb2_grpc.CampaignsStub(ch0)
            resp = await camp.Submit(
                campaigns_pb2.SubmitRequest(
                    name="victim",
                    activities=[
                        shell("first", "sleep 2", agent="agent-0"),
                        shell(
                            "second",
                            "ls; echo real-output",
                            agent="agent-1",
                            depends_on=["first"],
                        ),
                    ],
                ),
                timeout=5,
            )
            cid = resp.campaign_id
            await _wait_state(camp, cid, "first", S.ACTIVITY_STATE_RUNNING)
            assert (await _state_of(camp, cid, "second")).state == S.ACTIVITY_STATE_PENDING
            sched = scheduling_pb2_grpc.SchedulingStub(ch)
            evil = shell("second", "echo pwned > squat.txt; sleep 4", agent="agent-1")
            tender = scheduling_pb2.Tender(campaign_id=cid, activity="second", attempt=1, spec=evil)
            answer = await sched.Award(
                scheduling_pb2.AwardRequest(
                    monitor=a2.name,
                    items=[scheduling_pb2.AwardItem(tender=tender, monitor=a2.name)],
                ),
                timeout=5,
            )
            assert [d.accepted for d in answer.decisions] == [True]
            final = await _final(camp, cid)
            assert final.state == S.CAMPAIGN_STATE_SUCCEEDED, final
            second = next(a for a in final.activities if a.name == "second")
            assert second.agent == "agent-1"
            out = second.detail["stdout_tail"]
            assert "real-output" in out
            assert "squat.txt" not in out and "pwned" not in out
            assert not list(Path(second.detail["output_dir"]).parent.glob("squat.txt"))
            squatted = list(a1.data_dir.rglob("squat.txt"))
            assert squatted and all(a2.name in p.parts for p in squatted), squatted
        await still_serving(a0)


async def test_scheduling_calls_name_the_caller(tmp_path: Path) -> None:
    """Inject: agent-2 sends Award, Cancel, CallForProposals and ReportStatus to
    agent-1 naming agent-0 as the monitor/contractor. Check: PERMISSION_DENIED each
    time, and agent-1 holds no job."""
    async with mesh(tmp_path, 3) as (a0, a1, a2), as_agent(a2, a1) as ch:
        sched = scheduling_pb2_grpc.SchedulingStub(ch)
        tender = scheduling_pb2.Tender(campaign_id="c", activity="a", attempt=1, spec=shell("a"))
        calls = [
            sched.Award(
                scheduling_pb2.AwardRequest(
                    monitor=a0.name, items=[scheduling_pb2.AwardItem(tender=tender)]
                ),
                timeout=5,
            ),
            sched.Cancel(scheduling_pb2.CancelActivitiesRequest(monitor=a0.name), timeout=5),
            sched.CallForProposals(
                scheduling_pb2.CallForProposalsRequest(monitor=a0.name, tenders=[tender]),
                timeout=5,
            ),
            sched.ReportStatus(scheduling_pb2.ReportStatusRequest(contractor=a0.name), timeout=5),
        ]
        for call in calls:
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
            else:
                raise AssertionError("a call naming another member succeeded")
        assert a1.contractor is not None and not a1.contractor.jobs


# ------------------------------------------------------------------ the same over real processes
def _three(pm: ProcMesh) -> tuple[ProcAgent, ProcAgent, ProcAgent]:
    """agent-0 creates the mesh, agent-1 and agent-2 join; all alive in every view."""
    a0 = pm.init("agent-0")
    a0.start()
    a1 = pm.join("agent-1", a0)
    a1.start()
    a2 = pm.join("agent-2", a0)
    a2.start()
    names = {"agent-0", "agent-1", "agent-2"}

    def formed() -> bool:
        return all(
            set(v) == names and set(v.values()) == {"alive"}
            for v in (a.statuses() for a in (a0, a1, a2))
        )

    pm.wait_for(formed, 30, "every agent alive everywhere")
    return a0, a1, a2


def _local_stub(agent: ProcAgent) -> tuple[grpc.Channel, campaigns_pb2_grpc.CampaignsStub]:
    ch = grpc.insecure_channel(f"unix:{agent.home / 'agent.sock'}")
    return ch, campaigns_pb2_grpc.CampaignsStub(ch)


def _proc_wait_state(
    stub: campaigns_pb2_grpc.CampaignsStub, cid: str, name: str, state: int, timeout: float = 30
) -> campaigns_pb2.ActivityStatus:
    deadline = time.monotonic() + timeout
    while True:
        got = stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=5)
        act = next(a for a in got.activities if a.name == name)
        if act.state == state:
            return act
        assert time.monotonic() < deadline, f"{name} never reached {state}: {act}"
        time.sleep(0.05)


def _proc_final(
    stub: campaigns_pb2_grpc.CampaignsStub, cid: str, timeout: float = 45
) -> campaigns_pb2.CampaignStatus:
    """The campaign's status once it has ended (fails, with its status, if it has not)."""
    try:
        for _ in stub.Watch(
            campaigns_pb2.WatchRequest(campaign_id=cid, follow=True), timeout=timeout
        ):
            pass
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
            raise
        status = stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=5)
        raise AssertionError(f"campaign {cid} did not end within {timeout} s: {status}") from None
    return stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=5)


def test_foreign_cancel_is_refused_between_processes(procmesh: ProcMesh) -> None:
    """Inject: three real agent processes; with agent-2's own key and certificate
    (read from its home) the attacker calls Scheduling.Cancel{monitor: agent-2} on
    agent-1 for the activity of agent-0's campaign that agent-1 is running (exact
    attempt, and attempt 0 = any). Check: nothing is cancelled (``cancelled`` = 0),
    the activity ends SUCCEEDED on agent-1 with its output, and agent-0's own cancel
    of another activity there still works."""
    a0, a1, a2 = _three(procmesh)
    ch0, camp = _local_stub(a0)
    with ch0, grpc.secure_channel(a1.address, home_credentials(a2.home)) as ch:
        resp = camp.Submit(
            campaigns_pb2.SubmitRequest(
                name="victim", activities=[shell("slow", "sleep 3; echo done", agent="agent-1")]
            ),
            timeout=10,
        )
        cid = resp.campaign_id
        running = _proc_wait_state(camp, cid, "slow", S.ACTIVITY_STATE_RUNNING)
        sched = scheduling_pb2_grpc.SchedulingStub(ch)
        for attempt in (running.attempt, 0):
            answer = sched.Cancel(
                scheduling_pb2.CancelActivitiesRequest(
                    monitor=a2.name,
                    activities=[
                        scheduling_pb2.ActivityRef(
                            campaign_id=cid, activity="slow", attempt=attempt
                        )
                    ],
                ),
                timeout=10,
            )
            assert answer.cancelled == 0, answer
        final = _proc_final(camp, cid)
        assert final.state == S.CAMPAIGN_STATE_SUCCEEDED, final
        act = final.activities[0]
        assert act.agent == "agent-1"
        assert "done" in act.detail["stdout_tail"]

        # The monitor itself may still cancel its own work there.
        resp2 = camp.Submit(
            campaigns_pb2.SubmitRequest(
                name="own", activities=[shell("long", "sleep 60", agent="agent-1")]
            ),
            timeout=10,
        )
        _proc_wait_state(camp, resp2.campaign_id, "long", S.ACTIVITY_STATE_RUNNING)
        camp.Cancel(campaigns_pb2.CancelCampaignRequest(campaign_id=resp2.campaign_id), timeout=10)
        assert _proc_final(camp, resp2.campaign_id).state == S.CAMPAIGN_STATE_CANCELLED
    assert a1.statuses() == {"agent-0": "alive", "agent-1": "alive", "agent-2": "alive"}


def test_award_squatting_is_isolated_between_processes(procmesh: ProcMesh) -> None:
    """Inject: three real agent processes; before agent-0 places activity ``second``
    of its campaign (it waits on ``first``), the attacker, with agent-2's own key and
    certificate, sends Scheduling.Award{monitor: agent-2} to agent-1 for the same
    (campaign, activity, attempt) with its own command, which writes a marker into its
    working dir. Check: agent-1 takes it as agent-2's own job; the real ``second``
    still runs on agent-1 and ends SUCCEEDED with the real command's output; the
    marker is not in the real activity's working dir (only under agent-2's runs), and
    the campaign completes."""
    a0, a1, a2 = _three(procmesh)
    ch0, camp = _local_stub(a0)
    with ch0, grpc.secure_channel(a1.address, home_credentials(a2.home)) as ch:
        resp = camp.Submit(
            campaigns_pb2.SubmitRequest(
                name="victim",
                activities=[
                    shell("first", "sleep 3", agent="agent-0"),
                    shell("second", "ls; echo real-output", agent="agent-1", depends_on=["first"]),
                ],
            ),
            timeout=10,
        )
        cid = resp.campaign_id
        _proc_wait_state(camp, cid, "first", S.ACTIVITY_STATE_RUNNING)
        got = camp.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=5)
        second = next(a for a in got.activities if a.name == "second")
        assert second.state == S.ACTIVITY_STATE_PENDING, second
        sched = scheduling_pb2_grpc.SchedulingStub(ch)
        evil = shell("second", "echo pwned > squat.txt; sleep 4", agent="agent-1")
        tender = scheduling_pb2.Tender(campaign_id=cid, activity="second", attempt=1, spec=evil)
        answer = sched.Award(
            scheduling_pb2.AwardRequest(
                monitor=a2.name, items=[scheduling_pb2.AwardItem(tender=tender, monitor=a2.name)]
            ),
            timeout=10,
        )
        assert [d.accepted for d in answer.decisions] == [True], answer
        final = _proc_final(camp, cid)
        assert final.state == S.CAMPAIGN_STATE_SUCCEEDED, final
        second = next(a for a in final.activities if a.name == "second")
        assert second.agent == "agent-1"
        out = second.detail["stdout_tail"]
        assert "real-output" in out
        assert "squat.txt" not in out and "pwned" not in out
        workdir = Path(second.detail["output_dir"]).parent
        assert workdir.is_relative_to(a1.home), workdir
        assert workdir.is_dir() and not (workdir / "squat.txt").exists()
        squatted = list((a1.home / "data").rglob("squat.txt"))
        assert squatted and all(a2.name in p.parts for p in squatted), squatted
    assert a0.statuses() == {"agent-0": "alive", "agent-1": "alive", "agent-2": "alive"}


# ------------------------------------------------------------------ campaign ownership
def _client(agent: Agent, name: str, root: Path) -> grpc.ChannelCredentials:
    """mTLS credentials of a new client certificate ``name`` issued by ``agent``'s CA."""
    store = open_store(agent.home)
    try:
        bundle = issue_client(store, name, root / name)
    finally:
        store.close()
    return channel_credentials(
        bundle.key.read_bytes(), bundle.cert.read_bytes(), bundle.ca.read_bytes()
    )


async def test_another_clients_campaign_is_invisible(tmp_path: Path) -> None:
    """Inject: client bob (his own certificate of the mesh) calls Get, Watch,
    WatchBatches and Cancel on client alice's running campaign and lists campaigns;
    then submits with alice's ``client_request_id``. Check: NOT_FOUND every time
    (the same answer as for an id that does not exist), alice's campaign is absent
    from bob's list and keeps running to SUCCEEDED; bob's submit creates his own
    campaign; alice's repeated submit still returns hers; the local socket user
    and an identity named in ``admins`` see both."""
    bob_uri = "spiffe://test/client/bob"
    async with mesh(
        tmp_path, 2, configure=lambda i: {"admins": ["spiffe://test/client/carol"]}
    ) as (
        a0,
        _a1,
    ):
        creds = {n: _client(a0, n, tmp_path) for n in ("alice", "bob", "carol")}
        async with (
            grpc.aio.secure_channel(a0.address, creds["alice"]) as cha,
            grpc.aio.secure_channel(a0.address, creds["bob"]) as chb,
            grpc.aio.secure_channel(a0.address, creds["carol"]) as chc,
            local(a0) as chl,
        ):
            alice = campaigns_pb2_grpc.CampaignsStub(cha)
            bob = campaigns_pb2_grpc.CampaignsStub(chb)
            carol = campaigns_pb2_grpc.CampaignsStub(chc)
            owner = campaigns_pb2_grpc.CampaignsStub(chl)
            req = campaigns_pb2.SubmitRequest(
                name="alice's",
                activities=[shell("work", "sleep 2; echo alice")],
                client_request_id="run-1",
            )
            cid = (await alice.Submit(req, timeout=5)).campaign_id
            assert (await alice.Submit(req, timeout=5)).campaign_id == cid

            nf = grpc.StatusCode.NOT_FOUND
            for target in (cid, "0123456789abcdef"):
                assert (
                    await code_of(bob.Get(campaigns_pb2.GetCampaignRequest(campaign_id=target)))
                    == nf
                )
                assert (
                    await code_of(bob.Watch(campaigns_pb2.WatchRequest(campaign_id=target))) == nf
                )
                assert (
                    await code_of(bob.WatchBatches(campaigns_pb2.WatchRequest(campaign_id=target)))
                    == nf
                )
                assert (
                    await code_of(
                        bob.Cancel(campaigns_pb2.CancelCampaignRequest(campaign_id=target))
                    )
                    == nf
                )
            listed = await bob.ListCampaigns(campaigns_pb2.ListCampaignsRequest(), timeout=5)
            assert cid not in {c.campaign_id for c in listed.campaigns}

            # The same idempotency key from bob is bob's own campaign.
            bob_req = campaigns_pb2.SubmitRequest(
                name="bob's", activities=[shell("mine", "echo bob")], client_request_id="run-1"
            )
            bob_cid = (await bob.Submit(bob_req, timeout=5)).campaign_id
            assert bob_cid != cid
            assert (await bob.Submit(bob_req, timeout=5)).campaign_id == bob_cid
            listed = await bob.ListCampaigns(campaigns_pb2.ListCampaignsRequest(), timeout=5)
            assert {c.campaign_id for c in listed.campaigns} == {bob_cid}
            mine = await alice.ListCampaigns(campaigns_pb2.ListCampaignsRequest(), timeout=5)
            assert {c.campaign_id for c in mine.campaigns} == {cid}

            final = await _final(alice, cid)
            assert final.state == S.CAMPAIGN_STATE_SUCCEEDED, final
            assert "alice" in final.activities[0].detail["stdout_tail"]

            # Admins: the agent's own Unix user, and identities in ``admins``.
            for admin in (owner, carol):
                seen = await admin.ListCampaigns(campaigns_pb2.ListCampaignsRequest(), timeout=5)
                assert {cid, bob_cid} <= {c.campaign_id for c in seen.campaigns}
                got = await admin.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=5)
                assert got.state == S.CAMPAIGN_STATE_SUCCEEDED
            assert bob_uri not in a0.config.admins


# ------------------------------------------------------------------ execution policy
async def _submit_one(
    stub: campaigns_pb2_grpc.CampaignsStub, act: S.ActivitySpec
) -> campaigns_pb2.CampaignStatus:
    resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="p", activities=[act]), timeout=5)
    return await _final(stub, resp.campaign_id)


async def test_policy_allows_only_python_for_a_client(tmp_path: Path) -> None:
    """Inject: agent-1's ``[policy]`` lets client alice run only ``python`` (no shipped
    functions); everyone else anything. Alice submits, on agent-1, a shell activity
    pinned there; then on agent-0 the same (agent-0 cannot tell; agent-1 refuses the
    tender). Check: PERMISSION_DENIED at Submit on agent-1, naming the policy; via
    agent-0 the activity fails with the policy's reason; alice's shell pinned to
    agent-2 and her python script pinned to agent-1 succeed; a shipped function for
    agent-1 is refused; client bob runs shell on agent-1."""
    alice_uri = "spiffe://test/client/alice"
    policy = {alice_uri: ["python"], "*": ["*", "functions"]}
    async with mesh(tmp_path, 3, configure=lambda i: {"policy": policy} if i == 1 else {}) as (
        a0,
        a1,
        _a2,
    ):
        creds = {n: _client(a0, n, tmp_path) for n in ("alice", "bob")}
        script = a1.data_dir / "hello.py"
        script.write_text("print('hello from python')\n")
        async with (
            grpc.aio.secure_channel(a1.address, creds["alice"]) as ch1,
            grpc.aio.secure_channel(a0.address, creds["alice"]) as ch0,
            grpc.aio.secure_channel(a1.address, creds["bob"]) as chb,
        ):
            alice1 = campaigns_pb2_grpc.CampaignsStub(ch1)
            alice0 = campaigns_pb2_grpc.CampaignsStub(ch0)
            bob1 = campaigns_pb2_grpc.CampaignsStub(chb)
            pinned = shell("sh", "echo shell-ran", agent="agent-1")
            try:
                await alice1.Submit(
                    campaigns_pb2.SubmitRequest(name="p", activities=[pinned]), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "may not run plugin 'shell'" in (exc.details() or "")
            else:
                raise AssertionError("shell pinned to agent-1 was accepted for alice")
            listed = await alice1.ListCampaigns(campaigns_pb2.ListCampaignsRequest(), timeout=5)
            assert not listed.campaigns  # nothing was journaled

            via0 = await _submit_one(alice0, pinned)
            assert via0.state == S.CAMPAIGN_STATE_FAILED, via0
            assert "execution policy" in via0.activities[0].message, via0

            elsewhere = await _submit_one(alice1, shell("sh", "echo shell-ran", agent="agent-2"))
            assert elsewhere.state == S.CAMPAIGN_STATE_SUCCEEDED, elsewhere
            assert "shell-ran" in elsewhere.activities[0].detail["stdout_tail"]

            py = S.ActivitySpec(
                name="py", python=S.PythonSpec(script_uri=f"file://{script}"), agent="agent-1"
            )
            ran = await _submit_one(alice1, py)
            assert ran.state == S.CAMPAIGN_STATE_SUCCEEDED, ran
            assert "hello from python" in ran.activities[0].detail["stdout_tail"]

            fn = S.ActivitySpec(
                name="fn", python=S.PythonSpec(function=b"\x80\x05N."), agent="agent-1"
            )
            try:
                await alice1.Submit(campaigns_pb2.SubmitRequest(name="f", activities=[fn]))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "functions" in (exc.details() or "")
            else:
                raise AssertionError("a shipped function was accepted for alice")

            bobs = await _submit_one(bob1, pinned)
            assert bobs.state == S.CAMPAIGN_STATE_SUCCEEDED, bobs


# ------------------------------------------------------------------ push caps
async def test_push_stream_cap_idle_timeout_and_quota(tmp_path: Path) -> None:
    """Inject: agent-1 opens 6 Data.Push streams to agent-0 (max_streams_per_peer = 4,
    stream_idle_timeout_s = 1.5, max_push_bytes = 3 MiB) that send a header and then
    nothing; then pushes 2 MiB twice. Check: the streams beyond 4 get
    RESOURCE_EXHAUSTED at once; the stalled ones are ended by the idle timeout
    (RESOURCE_EXHAUSTED) and leave no file; the first 2 MiB push is installed, the
    second is over the quota (RESOURCE_EXHAUSTED) until the first file is removed."""
    limits = {"max_streams_per_peer": 4, "stream_idle_timeout_s": 1.5, "max_push_bytes": 3 << 20}
    async with mesh(tmp_path, 2, configure=lambda i: limits if i == 0 else {}) as (a0, a1):
        async with as_agent(a1, a0) as ch:
            data = data_pb2_grpc.DataStub(ch)
            stall = asyncio.Event()

            def header(name: str, payload: bytes) -> data_pb2.PushChunk:
                return data_pb2.PushChunk(
                    path=name, size=len(payload), sha256=hashlib.sha256(payload).hexdigest()
                )

            async def stalled(i: int) -> AsyncIterator[data_pb2.PushChunk]:
                yield header(f"stall{i}.bin", b"x" * 1024)
                await stall.wait()

            calls = [data.Push(stalled(i), timeout=30) for i in range(6)]
            t = time.monotonic()
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(c) for c in calls], timeout=1.0
            )
            assert len(done) == 2 and len(pending) == 4, (len(done), len(pending))
            for f in done:
                exc = f.exception()
                assert isinstance(exc, grpc.aio.AioRpcError), exc
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "Push streams open" in (exc.details() or "")
            finished, _ = await asyncio.wait(pending, timeout=10)
            assert len(finished) == 4
            assert time.monotonic() - t < 10
            for f in finished:
                exc = f.exception()
                assert isinstance(exc, grpc.aio.AioRpcError), exc
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "sent no data" in (exc.details() or "")
            assert not list(a0.data_dir.glob("stall*.bin"))
            stall.set()

            async def push(name: str, payload: bytes) -> data_pb2.PushResponse:
                async def gen() -> AsyncIterator[data_pb2.PushChunk]:
                    first = header(name, payload)
                    for off in range(0, len(payload), 1 << 20):
                        if off:
                            yield data_pb2.PushChunk(data=payload[off : off + (1 << 20)])
                        else:
                            first.data = payload[: 1 << 20]
                            yield first

                result: data_pb2.PushResponse = await data.Push(gen(), timeout=30)
                return result

            blob = os.urandom(2 << 20)
            got = await push("one.bin", blob)
            assert got.info.size == len(blob)
            assert (a0.data_dir / "one.bin").read_bytes() == blob
            try:
                await push("two.bin", blob)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "quota" in (exc.details() or "")
            else:
                raise AssertionError("a push over the quota was accepted")
            assert not (a0.data_dir / "two.bin").exists()
            (a0.data_dir / "one.bin").unlink()
            assert (await push("two.bin", blob)).info.size == len(blob)


# ------------------------------------------------------------------ no stall under load
def _big_campaign(i: int, n: int, pin: str) -> campaigns_pb2.SubmitRequest:
    """``n`` shell activities waiting on a gate that sleeps (nothing runs meanwhile)."""
    acts = [shell("gate", "sleep 600", agent=pin)]
    acts += [shell(f"a{j}", "true", depends_on=["gate"]) for j in range(n)]
    return campaigns_pb2.SubmitRequest(name=f"flood{i}", activities=acts)


def _submit_with_retries(socket: Path, req: campaigns_pb2.SubmitRequest) -> tuple[str, int]:
    """Submit, waiting as told by each RESOURCE_EXHAUSTED retry hint; (id, refusals)."""
    refusals = 0
    with grpc.insecure_channel(
        f"unix:{socket}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        while True:
            try:
                return stub.Submit(req, timeout=120).campaign_id, refusals
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc  # type: ignore[attr-defined]
                hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms")  # type: ignore[attr-defined]
                assert hint, "RESOURCE_EXHAUSTED without a retry hint"
                assert "retry in" in (exc.details() or "")  # type: ignore[attr-defined]
                refusals += 1
                time.sleep(min(int(hint), 5000) / 1000)


def test_flood_of_big_submits_keeps_the_agent_alive(procmesh: ProcMesh) -> None:
    """Inject: 20 concurrent Submits of 5,001-activity campaigns to agent a (a real
    process, in a mesh of 3) over its Unix socket; refused ones are retried as the
    retry hint says. Check: every Submit is eventually admitted (refusals carry a
    retry hint), a's 20 campaigns are listed, and b and c see a ALIVE in every poll
    of their member lists (every 0.1 s) throughout and for 3 s after."""
    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a)
    b.start()
    c = procmesh.join("c", a)
    c.start()
    observers = {"b": b, "c": c}

    def views() -> dict[str, int]:
        out = {}
        for name, agent in observers.items():
            with grpc.insecure_channel(f"unix:{agent.home / 'agent.sock'}") as ch:
                members = campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                    campaigns_pb2.ListMembersRequest(), timeout=10
                )
            out[name] = next((m.status for m in members.members if m.name == "a"), 0)
        return out

    procmesh.wait_for(
        lambda: all(s == S.MEMBER_STATUS_ALIVE for s in views().values()), 30, "a alive"
    )
    reqs = [_big_campaign(i, 5000, "a") for i in range(20)]
    socket = a.home / "agent.sock"
    seen: list[dict[str, int]] = []
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futs = [pool.submit(_submit_with_retries, socket, r) for r in reqs]
        while not all(f.done() for f in futs):
            seen.append(views())
            time.sleep(0.1)
        done_at = time.monotonic()
        while time.monotonic() - done_at < 3:
            seen.append(views())
            time.sleep(0.1)
        results = [f.result() for f in futs]
    assert len({cid for cid, _ in results}) == 20
    bad = [v for v in seen if any(s != S.MEMBER_STATUS_ALIVE for s in v.values())]
    assert not bad, f"a was not ALIVE in {len(bad)} of {len(seen)} polls: {bad[:5]}"
    with grpc.insecure_channel(f"unix:{socket}") as ch:
        listed = campaigns_pb2_grpc.CampaignsStub(ch).ListCampaigns(
            campaigns_pb2.ListCampaignsRequest(), timeout=30
        )
    assert {cid for cid, _ in results} <= {x.campaign_id for x in listed.campaigns}


async def test_admission_limit_answers_with_a_retry_hint_that_the_client_follows(
    tmp_path: Path,
) -> None:
    """Inject: with max_admitting_activities = 1,000, one identity submits 6
    campaigns of 800 activities at once over the raw API, then through the Python
    client. Check: raw Submits beyond the limit get RESOURCE_EXHAUSTED with a
    ``retry-after-ms`` hint and "retry in" in the message; another identity is not
    refused meanwhile; the Python client waits as told and gets all 6 admitted."""
    from zambeze_mesh.campaign.client import Client

    limit = {"max_admitting_activities": 1000}
    async with mesh(tmp_path, 1, configure=lambda i: limit) as (a0,):
        creds = _client(a0, "bob", tmp_path)
        reqs = [_big_campaign(i, 800, "agent-0") for i in range(6)]
        async with local(a0) as ch, grpc.aio.secure_channel(a0.address, creds) as chb:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            bob = campaigns_pb2_grpc.CampaignsStub(chb)
            calls = [stub.Submit(r, timeout=60) for r in reqs]
            other = bob.Submit(_big_campaign(9, 800, "agent-0"), timeout=60)
            answers = await asyncio.gather(*calls, return_exceptions=True)
            assert (await other).campaign_id
        refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert refused and len(refused) < 6
        for exc in refused:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry in" in (exc.details() or "")
            hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms")
            assert hint and int(hint) >= 1000

        client = Client(f"unix:{a0.home.socket}")
        try:
            results = await asyncio.gather(
                *(client.submit(f"c{i}", list(r.activities)) for i, r in enumerate(reqs))
            )
        finally:
            await client.close()
        assert len({r.campaign_id for r in results}) == 6
