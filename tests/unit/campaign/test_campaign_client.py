"""Client behaviour against a real grpc.aio server running a scripted TEST DOUBLE.

The server (``fake_campaigns.FakeCampaigns``) is not the real monitor; it only
plays scripted events so that the client's futures, resume, poll and bridge
can be checked over real gRPC on a Unix socket.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import grpc
import pytest
from rich.console import Console

import zambeze_mesh as zm
from tests.unit.campaign.fake_campaigns import FakeCampaigns, ServerThread
from zambeze_mesh.campaign.client import Client, connect, default_client, set_default_client
from zambeze_mesh.campaign.futures import ActivityResult
from zambeze_mesh.errors import FailedPrecondition, InvalidInput, NotFound, Unavailable
from zambeze_mesh.membership.status import MemberStatus


def square_plus(x: int, plus: int = 0) -> dict[str, int]:
    return {"value": x * x + plus}


def three_step(client: Client, fail: bool = False) -> tuple[zm.Campaign, list[zm.Activity]]:
    camp = zm.Campaign("three steps", client=client)
    sim = zm.ShellActivity("sim", cmd="exit 1 # fail" if fail else "./sim.sh")
    fit = zm.PythonActivity(
        "fit", func=square_plus, args=(7,), kwargs={"plus": 1}, depends_on=[sim]
    )
    store = zm.TransferActivity("store", source=fit.output_dir, dest="repo://runs")
    acts: list[zm.Activity] = [sim, fit, store]
    camp.add_activities(acts)
    return camp, acts


def test_dispatch_futures_and_wait(client: Client, fake: FakeCampaigns) -> None:
    camp, (sim, fit, store) = three_step(client)
    cid = camp.dispatch(timeout=10)
    assert cid == "c1" and camp.monitor == "agent-0"
    assert [a.name for a in fake.submits[0].activities] == ["sim", "fit", "store"]
    assert fake.submits[0].name == "three steps" and fake.submits[0].client_request_id
    assert fit.future.result(10) == {"value": 50}  # cloudpickled return value
    res = sim.future.result(10)
    assert isinstance(res, ActivityResult)
    assert (res.state, res.agent, res.exit_code, res.stdout_tail) == (
        "SUCCEEDED",
        "agent-0",
        0,
        "sim done\n",
    )
    assert camp.wait(10) == "SUCCEEDED"
    assert camp.poll() == {"sim": "SUCCEEDED", "fit": "SUCCEEDED", "store": "SUCCEEDED"}
    assert store.future.done() and camp.done
    assert camp.dispatch() == cid and len(fake.submits) == 1  # idempotent


def test_campaigns_are_followed_with_watch_batches(client: Client, fake: FakeCampaigns) -> None:
    camp, acts = three_step(client)
    camp.dispatch(timeout=10)
    assert camp.wait(10) == "SUCCEEDED"
    assert all(a.future.done() for a in acts)
    assert fake.watches and fake.batched_watches == len(fake.watches)


def test_failure_becomes_activity_failed(client: Client) -> None:
    camp, (sim, fit, _) = three_step(client, fail=True)
    camp.dispatch()
    assert camp.wait(10) == "FAILED"
    exc = sim.future.exception(10)
    assert isinstance(exc, zm.ActivityFailed)
    assert exc.state == "FAILED" and exc.returncode == 2 and exc.agent == "agent-0"
    assert exc.stderr_tail == "boom: no such file\n"
    assert "boom: no such file" in str(exc) and "exit code 2" in str(exc)
    with pytest.raises(zm.ActivityFailed, match="SKIPPED"):
        fit.future.result(10)
    assert camp.poll() == {"sim": "FAILED", "fit": "SKIPPED", "store": "SKIPPED"}


def test_watch_resumes_after_unavailable_without_gaps(client: Client, fake: FakeCampaigns) -> None:
    fake.break_at_seq = 3
    camp, (_, fit, _) = three_step(client)
    camp.dispatch()
    assert camp.wait(10) == "SUCCEEDED"
    assert fit.future.result(1) == {"value": 50}
    # The watcher re-subscribed from exactly the last seq it saw.
    assert fake.watches == [("c1", 0), ("c1", 3)]

    async def collect() -> list[int]:
        fake.break_at_seq = 4
        return [ev.seq async for ev in client.watch("c1", 0)]

    seqs = asyncio.run(collect())
    assert seqs == list(range(1, len(fake.events["c1"]) + 1))
    assert fake.watches[-2:] == [("c1", 0), ("c1", 4)]


def test_watch_gives_up_after_the_retry_limit(server: ServerThread, fake: FakeCampaigns) -> None:
    client = Client(server.target, retry_backoff=0.001, watch_retries=2)
    try:
        fake.always_unavailable = True
        camp, (sim, _, _) = three_step(client)
        camp.dispatch()
        with pytest.raises(Unavailable, match="link down"):
            camp.wait(10)
        assert fake.watches == [("c1", 0)] * 3  # first try + 2 retries
        with pytest.raises(Unavailable):
            sim.future.result(1)
    finally:
        client.close_sync()


def test_poll_nonblocking_mid_campaign(client: Client, fake: FakeCampaigns) -> None:
    fake.gate_after_seq = 2  # campaign RUNNING, sim RUNNING
    camp, (_, fit, _) = three_step(client)
    camp.dispatch()
    deadline = time.monotonic() + 10
    while camp.poll()["sim"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert camp.poll() == {"sim": "RUNNING", "fit": "PENDING", "store": "PENDING"}
    assert not fit.future.done()
    with pytest.raises(TimeoutError):
        camp.wait(0.05)
    with pytest.raises(TimeoutError):
        fit.future.result(0.05)
    st = camp.status()
    assert st.state == "RUNNING" and st.states["sim"] == "RUNNING" and st.last_seq == 2
    fake.gate.set()
    assert camp.wait(10) == "SUCCEEDED"


def test_poll_blocking_renders_a_table(client: Client) -> None:
    camp, _ = three_step(client, fail=True)
    with pytest.raises(FailedPrecondition):
        camp.poll(blocking=True)
    camp.dispatch()
    out = io.StringIO()
    states = camp.poll(blocking=True, console=Console(file=out, width=120), refresh=0.02)
    assert states == {"sim": "FAILED", "fit": "SKIPPED", "store": "SKIPPED"}
    text = out.getvalue()
    for word in ("three steps", "sim", "fit", "store", "FAILED", "SKIPPED", "agent-0"):
        assert word in text


def test_submit_rejection_maps_to_zmesh_error(client: Client, fake: FakeCampaigns) -> None:
    fake.reject = (grpc.StatusCode.INVALID_ARGUMENT, "dependency cycle: a -> b -> a")
    camp = zm.Campaign("cyclic", client=client)
    camp.add_activities([zm.ShellActivity("a", cmd="x"), zm.ShellActivity("b", cmd="y")])
    with pytest.raises(InvalidInput, match="dependency cycle: a -> b -> a"):
        camp.dispatch()
    assert camp.id is None


def test_client_side_reference_check(client: Client) -> None:
    camp = zm.Campaign("refs", client=client)
    camp.add_activity(zm.ShellActivity("a", cmd="x", depends_on=["ghost"]))
    with pytest.raises(InvalidInput, match="'ghost', which is not in this campaign"):
        camp.dispatch()
    with pytest.raises(InvalidInput, match="no activities"):
        zm.Campaign("empty", client=client).dispatch()


def test_attach_from_another_process_view(client: Client, server: ServerThread) -> None:
    camp, _ = three_step(client)
    cid = camp.dispatch()
    camp.wait(10)
    other = Client(server.target)
    try:
        seen = zm.Campaign.attach(cid, client=other)
        assert seen.name == "three steps" and seen.id == cid
        assert set(seen.futures) == {"sim", "fit", "store"}
        assert seen.futures["fit"].result(10) == {"value": 50}
        assert seen.wait(10) == "SUCCEEDED"
        assert seen.poll() == {"sim": "SUCCEEDED", "fit": "SUCCEEDED", "store": "SUCCEEDED"}
        with pytest.raises(NotFound):
            zm.Campaign.attach("nope", client=other)
    finally:
        other.close_sync()


def test_attach_mid_campaign_then_follow(client: Client, fake: FakeCampaigns) -> None:
    fake.gate_after_seq = 3
    camp, _ = three_step(client)
    cid = camp.dispatch()
    seen = zm.Campaign.attach(cid, client=client)
    assert not seen.futures["fit"].done()
    fake.gate.set()
    assert seen.futures["fit"].result(10) == {"value": 50}
    assert seen.wait(10) == "SUCCEEDED"


def test_cancel_list_and_members(client: Client, fake: FakeCampaigns) -> None:
    camp, _ = three_step(client)
    cid = camp.dispatch()
    st = camp.cancel()
    assert fake.cancels == [cid] and st.state == "CANCELLED"

    async def lists() -> tuple[list[zm.campaign.CampaignStatus], zm.campaign.Members]:
        return await client.list_campaigns(), await client.list_members()

    campaigns, members = asyncio.run(lists())
    assert [c.campaign_id for c in campaigns] == [cid]
    assert members.self_name == "agent-0" and members.mesh == "testmesh"
    assert members.members[0].status == MemberStatus.ALIVE and members.members[0].plugins == (
        "shell",
        "python",
    )


async def test_sync_api_inside_a_running_event_loop(client: Client) -> None:
    """What a Jupyter cell does: call the blocking API while a loop is running."""
    asyncio.get_running_loop()
    camp, (_, fit, _) = three_step(client)
    camp.dispatch()
    assert fit.future.result(10) == {"value": 50}
    assert camp.wait(10) == "SUCCEEDED"
    assert camp.poll(blocking=True, console=Console(file=io.StringIO()))["store"] == "SUCCEEDED"
    assert camp.status().state == "SUCCEEDED"


async def test_async_twins(client: Client, fake: FakeCampaigns) -> None:
    fake.break_at_seq = 5
    camp, (_, fit, _) = three_step(client)
    cid = await camp.dispatch_async()
    events = [ev async for ev in camp.events()]
    assert [e.seq for e in events] == list(range(1, len(fake.events[cid]) + 1))
    assert events[0].is_campaign_event and events[0].campaign_state == "RUNNING"
    assert events[-1].is_final and events[-1].campaign_state == "SUCCEEDED"
    assert await camp.wait_async(10) == "SUCCEEDED"
    assert await asyncio.wrap_future(fit.future) == {"value": 50}
    assert (await camp.status_async()).state == "SUCCEEDED"
    later = [ev.seq async for ev in camp.events(after_seq=len(events) - 2)]
    assert later == [len(events) - 1, len(events)]
    again = await zm.Campaign.attach_async(cid, client=client)
    assert await again.wait_async(10) == "SUCCEEDED"


async def test_leaving_an_event_stream_early_is_clean(client: Client, fake: FakeCampaigns) -> None:
    fake.gate_after_seq = 2
    camp, _ = three_step(client)
    await camp.dispatch_async()
    async for ev in camp.events():
        if ev.seq == 2:
            break
    fake.gate.set()
    assert await camp.wait_async(10) == "SUCCEEDED"


def test_unreachable_agent_is_unavailable(sock_dir: Path) -> None:
    client = Client(f"unix:{sock_dir / 'missing.sock'}")
    try:
        camp = zm.Campaign("nowhere", client=client)
        camp.add_activity(zm.ShellActivity("a", cmd="true"))
        with pytest.raises(Unavailable, match=r"missing\.sock"):
            camp.dispatch(timeout=30)
    finally:
        client.close_sync()


def test_connect_defaults_to_the_home_socket(
    sock_dir: Path, fake: FakeCampaigns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZMESH_HOME", str(sock_dir))
    srv = ServerThread(fake, sock_dir / "agent.sock")
    try:
        set_default_client(None)
        c = default_client()  # lazily: the local agent of $ZMESH_HOME
        assert c.target == f"unix:{sock_dir / 'agent.sock'}"
        explicit = connect(home=sock_dir)
        assert default_client() is explicit
        camp = zm.Campaign("default client")  # no client: uses zm.connect()'s
        act = zm.PythonActivity("f", func=square_plus, args=(3,))
        camp.add_activity(act)
        camp.dispatch()
        assert act.future.result(10) == {"value": 9}
        c.close_sync()
        explicit.close_sync()
    finally:
        set_default_client(None)
        srv.stop()


def test_connect_tcp_needs_certificates(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cert=, key= and ca="):
        connect("127.0.0.1:7000")
    with pytest.raises(InvalidInput, match="cannot read the CA file"):
        connect("127.0.0.1:7000", cert=tmp_path / "c", key=tmp_path / "k", ca=tmp_path / "ca")


def test_many_threads_share_the_bridge(client: Client) -> None:
    results: list[object] = []

    def run(i: int) -> None:
        camp = zm.Campaign(f"t{i}", client=client)
        act = zm.PythonActivity("f", func=square_plus, args=(i,))
        camp.add_activity(act)
        camp.dispatch()
        results.append(act.future.result(10))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(r["value"] for r in results) == [0, 1, 4, 9]  # type: ignore[index]


def test_connect_over_mtls_with_client_certificate(tmp_path: Path, fake: FakeCampaigns) -> None:
    from zambeze_mesh.security import Identity, MeshCA
    from zambeze_mesh.security.keys import der_to_pem, key_to_pem
    from zambeze_mesh.security.tls import server_credentials

    ca = MeshCA.create("alpha")
    agent_key, agent_der = ca.issue(Identity.agent("alpha", "a1"), hosts=["127.0.0.1"])
    client_key, client_der = ca.issue(Identity.client("alpha", "alice"))
    creds = server_credentials(key_to_pem(agent_key), der_to_pem(agent_der), ca.cert_pem)
    srv = ServerThread(fake, credentials=creds)
    (tmp_path / "client.pem").write_bytes(der_to_pem(client_der))
    (tmp_path / "client.key").write_bytes(key_to_pem(client_key))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    try:
        c = connect(
            srv.target,
            cert=tmp_path / "client.pem",
            key=tmp_path / "client.key",
            ca=tmp_path / "ca.pem",
            set_default=False,
        )
        camp = zm.Campaign("secure", client=c)
        act = zm.PythonActivity("f", func=square_plus, args=(5,))
        camp.add_activity(act)
        camp.dispatch(timeout=20)
        assert act.future.result(10) == {"value": 25}
        c.close_sync()
        # Without a certificate from this mesh's CA the server refuses the handshake.
        other = MeshCA.create("alpha")
        (tmp_path / "other.pem").write_bytes(other.cert_pem)
        bad = connect(
            srv.target,
            cert=tmp_path / "client.pem",
            key=tmp_path / "client.key",
            ca=tmp_path / "other.pem",
            set_default=False,
        )
        with pytest.raises(Unavailable):
            asyncio.run(bad.get("c1"))
        bad.close_sync()
    finally:
        srv.stop()
