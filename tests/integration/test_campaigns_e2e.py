"""Campaigns end to end on real in-process meshes (real gRPC, mTLS, processes)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import grpc
import pytest

from tests.helpers.inproc import mesh, wait_until
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2


def shell(name: str, cmd: str, **kw: object) -> S.ActivitySpec:
    return S.ActivitySpec(name=name, shell=S.ShellSpec(cmd=cmd), **kw)


def py(name: str, script: Path, *args: str, **kw: object) -> S.ActivitySpec:
    return S.ActivitySpec(
        name=name, python=S.PythonSpec(script_uri=f"file://{script}", args=list(args)), **kw
    )


async def submit_and_watch(
    stub: campaigns_pb2_grpc.CampaignsStub, acts: list[S.ActivitySpec], name: str = "t"
) -> tuple[campaigns_pb2.CampaignStatus, list[S.Event]]:
    resp = await stub.Submit(campaigns_pb2.SubmitRequest(name=name, activities=acts))
    events = [
        ev
        async for ev in stub.Watch(
            campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
        )
    ]
    status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
    return status, events


def by_name(status: campaigns_pb2.CampaignStatus) -> dict[str, campaigns_pb2.ActivityStatus]:
    return {a.name: a for a in status.activities}


READER = """
import os, sys
out = os.environ["ZMESH_OUTPUT_DIR"]
parts = []
for p in os.environ["ZMESH_INPUTS"].split(os.pathsep):
    for root, _, files in os.walk(p):
        for f in sorted(files):
            parts.append(open(os.path.join(root, f)).read().strip())
open(os.path.join(out, "result.txt"), "w").write(sys.argv[1] + ":" + "|".join(sorted(parts)))
"""


async def test_diamond_over_three_agents(tmp_path: Path) -> None:
    script = tmp_path / "reader.py"
    script.write_text(READER)
    async with mesh(tmp_path, 3) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [
                shell("one", "echo one > $ZMESH_OUTPUT_DIR/one.txt", agent="agent-1"),
                py("two", script, "two", data_uris=["@output:one"], agent="agent-2"),
                shell(
                    "three",
                    "cat $ZMESH_INPUT_0/one.txt | sed s/one/three/ > $ZMESH_OUTPUT_DIR/t.txt",
                    data_uris=["@output:one"],
                    agent="agent-0",
                ),
                py(
                    "four",
                    script,
                    "four",
                    data_uris=["@output:two", "@output:three"],
                    agent="agent-1",
                ),
            ]
            status, events = await submit_and_watch(stub, acts)
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
    acts_ = by_name(status)
    assert {n: a.agent for n, a in acts_.items()} == {
        "one": "agent-1",
        "two": "agent-2",
        "three": "agent-0",
        "four": "agent-1",
    }
    four_out = Path(acts_["four"].detail["output_dir"]) / "result.txt"
    assert four_out.read_text() == "four:three|two:one"
    staged = [e for e in events if e.state == S.ACTIVITY_STATE_STAGING and "bytes" in e.detail]
    assert staged, "cross-agent inputs must show STAGING events with bytes"


async def test_placement_varies_and_requires_labels_are_honoured(tmp_path: Path) -> None:
    labels = [{"role": "edge"}, {"role": "hpc"}, {"role": "hpc"}]
    async with mesh(tmp_path, 3, labels=labels) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            placements: Counter[str] = Counter()
            for run in range(4):
                acts = [shell(f"free{i}", "true") for i in range(6)]
                acts.append(shell("hpc", "true", requires=S.Requirements(labels={"role": "hpc"})))
                status, _ = await submit_and_watch(stub, acts, name=f"run{run}")
                assert status.state == S.CAMPAIGN_STATE_SUCCEEDED
                got = by_name(status)
                assert got["hpc"].agent in ("agent-1", "agent-2")
                placements.update(got[f"free{i}"].agent for i in range(6))
    assert len(placements) >= 2, f"placement never varied: {placements}"


async def test_failure_skips_dependants_and_reports_stderr(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [
                shell("bad", "echo boom-on-stderr >&2; exit 3"),
                shell("after", "true", depends_on=["bad"]),
                shell("after2", "true", depends_on=["after"]),
                shell("independent", "true"),
            ]
            status, _ = await submit_and_watch(stub, acts)
    assert status.state == S.CAMPAIGN_STATE_FAILED
    got = by_name(status)
    assert got["bad"].state == S.ACTIVITY_STATE_FAILED
    assert "exit code 3" in got["bad"].message
    assert "boom-on-stderr" in got["bad"].detail["stderr_tail"]
    assert got["after"].state == S.ACTIVITY_STATE_SKIPPED
    assert got["after2"].state == S.ACTIVITY_STATE_SKIPPED
    assert got["independent"].state == S.ACTIVITY_STATE_SUCCEEDED
    assert "boom-on-stderr" in status.message and "'bad' failed" in status.message


async def test_retries_then_success(tmp_path: Path) -> None:
    marker = tmp_path / "tries"
    async with mesh(tmp_path, 1) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            cmd = f"echo x >> {marker}; test $(wc -l < {marker}) -ge 2"
            status, events = await submit_and_watch(stub, [shell("flaky", cmd, retries=2)])
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED
    assert by_name(status)["flaky"].attempt == 2
    assert any(e.state == S.ACTIVITY_STATE_RETRYING for e in events)


async def test_cancel_kills_remote_processes(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    async with mesh(tmp_path, 2) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            act = shell("long", f"sleep 300 & echo $! > {pidfile}; wait", agent="agent-1")
            resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="c", activities=[act]))
            await wait_until(
                lambda: pidfile.exists() and pidfile.read_text().strip() != "",
                20,
                "the remote sleep to start",
            )
            pid = int(pidfile.read_text())
            status = await stub.Cancel(
                campaigns_pb2.CancelCampaignRequest(campaign_id=resp.campaign_id)
            )
            assert status.state == S.CAMPAIGN_STATE_CANCELLED

            def gone() -> bool:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                return False

            await wait_until(gone, 15, "the remote process to be killed")


@pytest.mark.parametrize(
    "case,code",
    [
        ("no-body", grpc.StatusCode.INVALID_ARGUMENT),
        ("cycle", grpc.StatusCode.INVALID_ARGUMENT),
        ("duplicate", grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown-plugin", grpc.StatusCode.FAILED_PRECONDITION),
        ("too-many", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("oversized", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("bad-name", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_input_refused_nothing_stored(tmp_path: Path, case: str, code: object) -> None:
    async with mesh(tmp_path, 1) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            name = "t"
            if case == "no-body":
                acts = [S.ActivitySpec(name="x")]
            elif case == "cycle":
                acts = [shell("x", "true", depends_on=["y"]), shell("y", "true", depends_on=["x"])]
            elif case == "duplicate":
                acts = [shell("x", "true"), shell("x", "true")]
            elif case == "unknown-plugin":
                acts = [S.ActivitySpec(name="w", workflow=S.WorkflowSpec(wf_manager="nope"))]
            elif case == "too-many":
                acts = [shell(f"a{i}", "true") for i in range(10_001)]
            elif case == "oversized":
                acts = [shell("x", "true" + " " * (5 * 1024 * 1024))]
            else:
                acts = [shell("x", "true")]
                name = ""
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Submit(campaigns_pb2.SubmitRequest(name=name, activities=acts))
            assert err.value.code() == code, err.value.details()
            assert err.value.details()
            listed = await stub.ListCampaigns(campaigns_pb2.ListCampaignsRequest())
            assert not listed.campaigns
            # the agent keeps serving
            ok, _ = await submit_and_watch(stub, [shell("fine", "true")])
            assert ok.state == S.CAMPAIGN_STATE_SUCCEEDED


async def test_watch_resumes_from_any_sequence_number(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            status, events = await submit_and_watch(
                stub, [shell(f"s{i}", "true") for i in range(5)]
            )
            tail = [
                ev
                async for ev in stub.Watch(
                    campaigns_pb2.WatchRequest(
                        campaign_id=status.campaign_id, after_seq=7, follow=True
                    )
                )
            ]
    assert [e.seq for e in tail] == [e.seq for e in events if e.seq > 7]
    assert tail[-1].campaign_state == S.CAMPAIGN_STATE_SUCCEEDED
    assert status.last_seq == events[-1].seq


async def test_watch_batches_carry_the_same_events_in_batches(tmp_path: Path) -> None:
    """WatchBatches: same events as Watch, in seq order, in non-empty batches; it ends
    right after the final event, resumes from any seq, and follows a live campaign."""
    async with mesh(tmp_path, 2) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [shell(f"s{i}", "sleep 0.2") for i in range(6)]
            resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="b", activities=acts))
            cid = resp.campaign_id
            live = [
                b
                async for b in stub.WatchBatches(
                    campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
                )
            ]
            single = [
                e
                async for e in stub.Watch(campaigns_pb2.WatchRequest(campaign_id=cid, follow=True))
            ]
            tail = [
                b
                async for b in stub.WatchBatches(
                    campaigns_pb2.WatchRequest(campaign_id=cid, after_seq=5, follow=True)
                )
            ]
            past = [
                b
                async for b in stub.WatchBatches(
                    campaigns_pb2.WatchRequest(
                        campaign_id=cid, after_seq=single[-1].seq, follow=True
                    )
                )
            ]
    flat = [e for b in live for e in b.events]
    assert all(len(b.events) > 0 for b in live)
    assert [e.SerializeToString() for e in flat] == [e.SerializeToString() for e in single]
    assert [e.seq for e in flat] == list(range(1, len(flat) + 1))
    assert flat[-1].campaign_state == S.CAMPAIGN_STATE_SUCCEEDED
    assert len(live) > 1  # followed live: several batches
    assert [e.seq for b in tail for e in b.events] == [e.seq for e in single if e.seq > 5]
    assert past == []


async def test_reports_from_an_agent_that_was_not_awarded_are_ignored(tmp_path: Path) -> None:
    """Injected: agent-2 (a genuine member) reports SUCCEEDED for an activity awarded to
    agent-1, right after submission (while it is being placed) and while it runs.
    Checked: the journal never credits agent-2; the real contractor's result stands."""
    from zambeze_mesh.security.keys import der_to_pem
    from zambeze_mesh.security.tls import channel_credentials
    from zambeze_mesh.v1 import scheduling_pb2, scheduling_pb2_grpc

    async with mesh(tmp_path, 3) as agents:
        thief = agents[2]
        assert thief.identity is not None and thief.ca is not None
        creds = channel_credentials(
            thief.identity.key_pem, der_to_pem(thief.identity.cert_der), thief.ca.cert_pem
        )
        async with (
            grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch,
            grpc.aio.secure_channel(agents[0].address, creds) as peer,
        ):
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            act = shell("job", "sleep 1; echo real > $ZMESH_OUTPUT_DIR/who", agent="agent-1")
            resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="h", activities=[act]))
            fake = S.Event(
                campaign_id=resp.campaign_id,
                activity="job",
                attempt=1,
                agent="agent-2",
                state=S.ACTIVITY_STATE_SUCCEEDED,
                message="stolen",
            )
            forged = scheduling_pb2.ReportStatusRequest(
                contractor="agent-2",
                events=[scheduling_pb2.ContractorEvent(outbox_seq=1, event=fake)],
            )
            sched = scheduling_pb2_grpc.SchedulingStub(peer)
            await sched.ReportStatus(forged, timeout=5)
            await asyncio.sleep(0.5)
            await sched.ReportStatus(forged, timeout=5)
            events = [
                ev
                async for ev in stub.Watch(
                    campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
                )
            ]
            status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED
    assert by_name(status)["job"].agent == "agent-1"
    assert all(e.agent != "agent-2" for e in events)
    assert not any(e.message == "stolen" for e in events)


async def test_full_agents_defer_instead_of_failing(tmp_path: Path) -> None:
    """Two agents that accept at most 2 activities each get a campaign of 12: the
    surplus waits READY ("waiting for room", agents busy) and is offered again until
    placed; every activity succeeds and no agent ever held more than 2."""
    async with mesh(tmp_path, 2, configure=lambda i: {"slots": 1, "max_queued": 2}) as agents:
        held: list[int] = []

        def count() -> None:
            for a in agents:
                assert a.contractor is not None
                held.append(len(a.contractor.jobs))

        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [shell(f"s{i}", "sleep 0.1") for i in range(12)]
            resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="full", activities=acts))
            events = []
            async for ev in stub.Watch(
                campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
            ):
                count()
                events.append(ev)
    assert events[-1].campaign_state == S.CAMPAIGN_STATE_SUCCEEDED, events[-1].message
    waits = [e for e in events if e.state == S.ACTIVITY_STATE_READY]
    assert waits, "the surplus should have waited READY"
    assert all(e.message.startswith("waiting for room") for e in waits)
    assert any("queue is full" in e.message for e in waits)
    done = {e.activity for e in events if e.state == S.ACTIVITY_STATE_SUCCEEDED}
    assert done == {f"s{i}" for i in range(12)}
    assert max(held) <= 2


async def test_big_bursts_are_split_under_a_small_message_limit(tmp_path: Path) -> None:
    """With max_message_bytes = 128 KiB, a campaign of 60 shipped functions of ~1.5 KiB
    each (~95 KiB submitted) is placed through calls for proposals without the
    functions and awards split into several RPCs, and every result comes back."""
    import cloudpickle

    from zambeze_mesh.agent import placement as placement_mod

    calls: list[int] = []
    real_split = placement_mod._split

    def counting_split(items: list, limit: int) -> list:  # type: ignore[type-arg]
        parts = real_split(items, limit)
        calls.append(len(parts))
        return parts

    placement_mod._split = counting_split  # type: ignore[assignment]
    try:
        cfg = {"slots": 2, "max_message_bytes": 128 * 1024}
        async with mesh(tmp_path, 2, configure=lambda i: cfg) as agents:
            async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
                stub = campaigns_pb2_grpc.CampaignsStub(ch)
                acts = []
                for i in range(60):
                    blob = cloudpickle.dumps((len, ("x" * 1500,), {}))
                    acts.append(S.ActivitySpec(name=f"f{i}", python=S.PythonSpec(function=blob)))
                status, events = await submit_and_watch(stub, acts)
    finally:
        placement_mod._split = real_split  # type: ignore[assignment]
    assert events[-1].campaign_state == S.CAMPAIGN_STATE_SUCCEEDED, events[-1].message
    assert {a.state for a in status.activities} == {S.ACTIVITY_STATE_SUCCEEDED}
    assert max(calls) > 1, "some call should have been split"


def test_split_keeps_order_and_a_size_bound() -> None:
    from zambeze_mesh.agent.campaign_wire import tender_to_pb
    from zambeze_mesh.agent.placement import _split
    from zambeze_mesh.scheduling import Tender, TenderKey, activity_from_spec
    from zambeze_mesh.v1 import scheduling_pb2

    tenders = []
    for i in range(50):
        spec = S.ActivitySpec(name=f"f{i}", python=S.PythonSpec(function=b"x" * 1000))
        t = Tender(TenderKey("c", f"f{i}", 1), activity_from_spec(spec), ("a",))
        tenders.append(scheduling_pb2.AwardItem(tender=tender_to_pb(t)))
    parts = _split(tenders, 10_000)
    assert [i for p in parts for i in p] == tenders
    assert all(sum(i.ByteSize() + 8 for i in p) <= 10_000 for p in parts)
    assert len(_split(tenders[:1], 10)) == 1  # one item bigger than the limit still goes
    bid_view = tender_to_pb(
        Tender(TenderKey("c", "f0", 1), activity_from_spec(tenders[0].tender.spec), ("a",)),
        for_bids=True,
    )
    assert bid_view.function_bytes == 1000 and not bid_view.spec.python.function


async def test_a_big_campaign_is_offered_in_chunks(tmp_path: Path) -> None:
    """600 shipped functions: calls for proposals leave OFFER_CHUNK tenders at a time
    (the first activities run while the monitor prepares the rest); all succeed."""
    import cloudpickle

    from zambeze_mesh.agent.placement import OFFER_CHUNK

    n = 600
    async with mesh(tmp_path, 2) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            blob = cloudpickle.dumps((abs, (-1,), {}))
            acts = [
                S.ActivitySpec(name=f"f{i}", python=S.PythonSpec(function=blob)) for i in range(n)
            ]
            status, _ = await submit_and_watch(stub, acts)
        placement = agents[0].monitor.placement if agents[0].monitor else None
        assert placement is not None
        cfps = placement.cn.stats["cfp_messages"]
    assert {a.state for a in status.activities} == {S.ACTIVITY_STATE_SUCCEEDED}
    chunks = -(-n // OFFER_CHUNK)
    assert cfps >= chunks * 2, f"{cfps} calls for proposals for {chunks} chunks to 2 agents"


async def test_more_waiting_activities_than_one_offer_chunk_all_run(tmp_path: Path) -> None:
    """Two agents accept 300 activities each; a campaign of 1,500 functions leaves
    hundreds waiting READY, more than one offer chunk: every one of them is offered
    again and the campaign completes."""
    import cloudpickle

    from zambeze_mesh.agent.placement import OFFER_CHUNK

    n = 1500
    cfg = {"slots": 2, "max_queued": 300}
    async with mesh(tmp_path, 2, configure=lambda i: cfg) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            blob = cloudpickle.dumps((abs, (-1,), {}))
            acts = [
                S.ActivitySpec(name=f"f{i}", python=S.PythonSpec(function=blob)) for i in range(n)
            ]
            status, events = await asyncio.wait_for(submit_and_watch(stub, acts), 120)
    waited = {e.activity for e in events if e.state == S.ACTIVITY_STATE_READY}
    assert len(waited) > OFFER_CHUNK, f"only {len(waited)} waited: the test needs more"
    assert {a.state for a in status.activities} == {S.ACTIVITY_STATE_SUCCEEDED}
