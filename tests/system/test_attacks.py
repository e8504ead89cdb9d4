"""Attacks on live agents: forged membership, stolen credentials, traversal, floods.

Every test names what it injects and what it checks, and ends by checking that the
attacked agent still serves others (ListMembers, a small campaign, a fetch).
In-process meshes (``tests/helpers/inproc.py``) use ``grpc.aio`` in the same loop;
the slow-reader test uses a real agent process so that its RSS can be measured.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers.creds import home_credentials
from tests.helpers.inproc import mesh, wait_until
from tests.helpers.procs import ProcMesh
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.bootstrap import issue_client, open_store, revoke_token
from zambeze_mesh.agent.join import join_mesh
from zambeze_mesh.errors import Unauthenticated, ZmeshError
from zambeze_mesh.security.keys import der_to_pem, key_from_pem
from zambeze_mesh.security.records import sign_record
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store.tokens import create_token
from zambeze_mesh.v1 import (
    campaigns_pb2,
    campaigns_pb2_grpc,
    common_pb2,
    data_pb2,
    data_pb2_grpc,
    membership_pb2,
    membership_pb2_grpc,
    scheduling_pb2,
    scheduling_pb2_grpc,
)

S = common_pb2
C = grpc.StatusCode
MiB = 1 << 20
REFUSED = {C.INVALID_ARGUMENT, C.PERMISSION_DENIED}


# ------------------------------------------------------------------ helpers
def creds_of(agent: Agent) -> grpc.ChannelCredentials:
    """mTLS credentials with ``agent``'s own identity (as an attacker holding its key)."""
    ident = agent.identity
    assert ident is not None
    return channel_credentials(
        ident.key_pem, der_to_pem(ident.cert_der), der_to_pem(ident.ca_cert_der)
    )


def as_agent(frm: Agent, to: Agent) -> grpc.aio.Channel:
    """A fresh channel from ``frm``'s identity to ``to``'s mTLS port."""
    return grpc.aio.secure_channel(to.address, creds_of(frm))


def local(agent: Agent) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"unix:{agent.home.socket}")


async def code_of(call: Any) -> grpc.StatusCode:
    """The status of a unary or server-streaming call (fails if it succeeds)."""
    try:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    raise AssertionError("the call succeeded")


async def still_serving(agent: Agent) -> None:
    """The agent answers ListMembers and runs a one-activity campaign to SUCCEEDED."""
    async with local(agent) as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        members = await stub.ListMembers(campaigns_pb2.ListMembersRequest(), timeout=5)
        assert members.self_name == agent.name
        resp = await stub.Submit(
            campaigns_pb2.SubmitRequest(
                name="after",
                activities=[S.ActivitySpec(name="ok", shell=S.ShellSpec(cmd="true"))],
            ),
            timeout=5,
        )
        async for ev in stub.Watch(
            campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
        ):
            last = ev
        assert last.campaign_state == S.CAMPAIGN_STATE_SUCCEEDED, last


def view(agent: Agent) -> dict[str, tuple[str, int, str]]:
    assert agent.gossip is not None
    return {m.name: (m.address, m.incarnation, m.status) for m in agent.gossip.members()}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------ membership replay
def _gossip_req(
    frm: str, updates: list[membership_pb2.MemberUpdate]
) -> membership_pb2.GossipRequest:
    req = membership_pb2.GossipRequest(updates=updates)
    setattr(req, "from", frm)
    return req


def _sync_req(frm: str, state: list[membership_pb2.MemberUpdate]) -> membership_pb2.SyncRequest:
    req = membership_pb2.SyncRequest(state=state)
    setattr(req, "from", frm)
    return req


def _update(
    signed: S.SignedRecord, frm: str, inc: int | None = None
) -> membership_pb2.MemberUpdate:
    rec = S.AgentRecord.FromString(signed.record)
    u = membership_pb2.MemberUpdate(
        kind=membership_pb2.MemberUpdate.KIND_ALIVE,
        name=rec.name,
        incarnation=rec.incarnation if inc is None else inc,
        signed=signed,
    )
    setattr(u, "from", frm)
    return u


async def test_replayed_record_with_new_address_is_rejected(tmp_path: Path) -> None:
    """Inject: agent-1 takes agent-2's genuine signed record (read from a Sync answer)
    and replays it to agent-0 through Membership.Gossip and Membership.Sync: with the
    address rewritten inside the signed bytes, with a bumped incarnation, re-signed
    with agent-1's own key, and unchanged. Check: every altered copy is rejected
    (``gossip.rejected`` grows), agent-0's view of agent-2 keeps its address and
    incarnation, and agent-0 keeps serving."""
    async with mesh(tmp_path, 3) as (a0, a1, a2):
        assert a0.gossip is not None
        evil = "127.0.0.1:9"
        async with as_agent(a1, a0) as ch:
            stub = membership_pb2_grpc.MembershipStub(ch)
            answer = await stub.Sync(_sync_req(a1.name, []), timeout=5)
            genuine = next(u.signed for u in answer.state if u.name == a2.name and u.signed.record)
            rec = S.AgentRecord.FromString(genuine.record)
            assert rec.address == a2.address
            before = view(a0)
            rejected0 = a0.gossip.rejected

            moved = S.SignedRecord()
            moved.CopyFrom(genuine)
            rec2 = S.AgentRecord()
            rec2.CopyFrom(rec)
            rec2.address = evil
            moved.record = rec2.SerializeToString(deterministic=True)
            rec3 = S.AgentRecord()
            rec3.CopyFrom(rec2)
            rec3.incarnation = rec.incarnation + 100
            assert a1.identity is not None
            resigned = sign_record(key_from_pem(a1.identity.key_pem), a1.identity.cert_der, rec3)
            forged = [
                _update(moved, a1.name),  # new address, signature of the old bytes
                _update(moved, a1.name, rec.incarnation + 100),
                _update(genuine, a1.name, rec.incarnation + 100),  # record/update mismatch
                _update(resigned, a1.name),  # signed by the wrong member
            ]
            for u in forged:
                await stub.Gossip(_gossip_req(a1.name, [u]), timeout=5)
                await stub.Sync(_sync_req(a1.name, [u]), timeout=5)
            # The genuine record, replayed unchanged, is harmless.
            await stub.Gossip(_gossip_req(a1.name, [_update(genuine, a1.name)]), timeout=5)
        await wait_until(
            # Copies not newer than what agent-0 knows are ignored before any check;
            # the three with a higher incarnation must be verified and rejected.
            lambda: a0.gossip is not None and a0.gossip.rejected >= rejected0 + 2 * 3,
            10,
            "forged records rejected",
        )
        await asyncio.sleep(0.5)
        after = view(a0)
        assert after[a2.name][0] == before[a2.name][0] == a2.address
        assert after[a2.name][1] < rec.incarnation + 100
        assert after[a2.name][2] == "alive"
        assert evil not in {v[0] for v in after.values()}
        await still_serving(a0)


# ------------------------------------------------------------------ client certificates
AGENT_ONLY: list[tuple[str, str]] = [
    ("/zambeze_mesh.v1.Membership/Ping", "uu"),
    ("/zambeze_mesh.v1.Membership/PingReq", "uu"),
    ("/zambeze_mesh.v1.Membership/Gossip", "uu"),
    ("/zambeze_mesh.v1.Membership/Sync", "uu"),
    ("/zambeze_mesh.v1.Membership/Leave", "uu"),
    ("/zambeze_mesh.v1.Membership/Revoke", "uu"),
    ("/zambeze_mesh.v1.Membership/PilotToken", "uu"),
    ("/zambeze_mesh.v1.Scheduling/CallForProposals", "uu"),
    ("/zambeze_mesh.v1.Scheduling/Award", "uu"),
    ("/zambeze_mesh.v1.Scheduling/ReportStatus", "uu"),
    ("/zambeze_mesh.v1.Scheduling/ReportStream", "ss"),
    ("/zambeze_mesh.v1.Scheduling/Cancel", "uu"),
    ("/zambeze_mesh.v1.Data/Offer", "uu"),
    ("/zambeze_mesh.v1.Data/Fetch", "us"),
    ("/zambeze_mesh.v1.Data/Push", "su"),
    ("/zambeze_mesh.v1.Data/Stat", "uu"),
    ("/zambeze_mesh.v1.Data/List", "uu"),
]


async def raw_call(
    ch: grpc.aio.Channel, method: str, shape: str, payload: bytes
) -> grpc.StatusCode:
    """Call ``method`` with raw request bytes; the status code (OK on success)."""
    try:
        if shape == "uu":
            await ch.unary_unary(method)(payload, timeout=5)
        elif shape == "us":
            async for _ in ch.unary_stream(method)(payload, timeout=5):
                pass
        elif shape == "ss":

            async def many() -> AsyncIterator[bytes]:
                yield payload

            async for _ in ch.stream_stream(method)(many(), timeout=5):
                pass
        else:

            async def one() -> AsyncIterator[bytes]:
                yield payload

            await ch.stream_unary(method)(one(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return C.OK


async def test_client_certificate_cannot_call_agent_rpcs(tmp_path: Path) -> None:
    """Inject: a client certificate issued by the mesh CA calls every Membership
    (but Join), Scheduling and Data RPC, with empty and with plausible requests.
    Check: PERMISSION_DENIED every time, nothing read (no hash computed); the same
    certificate may still use Campaigns.ListMembers."""
    async with mesh(tmp_path, 2) as (a0, _a1):
        (a0.data_dir / "f.txt").write_text("secret")
        store = open_store(a0.home)
        try:
            bundle = issue_client(store, "mallory", tmp_path / "mallory")
        finally:
            store.close()
        creds = channel_credentials(
            bundle.key.read_bytes(), bundle.cert.read_bytes(), bundle.ca.read_bytes()
        )
        hashed = a0.datasvc.catalog.hashes_computed
        plausible = {
            "/zambeze_mesh.v1.Data/Offer": data_pb2.OfferRequest(path="f.txt"),
            "/zambeze_mesh.v1.Data/Stat": data_pb2.StatRequest(path="f.txt"),
            "/zambeze_mesh.v1.Data/List": data_pb2.ListRequest(path="."),
            "/zambeze_mesh.v1.Scheduling/CallForProposals": scheduling_pb2.CallForProposalsRequest(
                monitor="mallory"
            ),
        }
        async with grpc.aio.secure_channel(a0.address, creds) as ch:
            for method, shape in AGENT_ONLY:
                assert await raw_call(ch, method, shape, b"") == C.PERMISSION_DENIED, method
                msg = plausible.get(method)
                if msg is not None:
                    code = await raw_call(ch, method, shape, msg.SerializeToString())
                    assert code == C.PERMISSION_DENIED, method
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            members = await stub.ListMembers(campaigns_pb2.ListMembersRequest(), timeout=5)
            assert {m.name for m in members.members} == {"agent-0", "agent-1"}
        assert a0.datasvc.catalog.hashes_computed == hashed
        await still_serving(a0)


# ------------------------------------------------------------------ revoked token
async def test_revoked_token_join_is_refused(tmp_path: Path) -> None:
    """Inject: a join token is created, then revoked, then used by a new agent.
    Check: the join fails with UNAUTHENTICATED, no certificate is written to the
    joiner's home, the mesh does not grow, and the seed keeps serving."""
    async with mesh(tmp_path, 1) as (a0,):
        store = open_store(a0.home)
        try:
            token = create_token(store, 3600)
            revoke_token(store, token)
        finally:
            store.close()
        home = Home(tmp_path / "intruder")
        with pytest.raises(ZmeshError) as err:
            await join_mesh(home, a0.address, token, name="intruder", listen="127.0.0.1:0")
        assert isinstance(err.value, Unauthenticated), err.value
        assert "revoked" in str(err.value).lower(), err.value
        assert not home.db.exists() or _no_identity(home)
        assert set(view(a0)) == {"agent-0"}
        await still_serving(a0)


def _no_identity(home: Home) -> bool:
    try:
        idstore.load_identity(open_store(home))
    except ZmeshError:
        return True
    return False


# ------------------------------------------------------------------ stolen grant
async def test_stolen_grant_is_refused(tmp_path: Path) -> None:
    """Inject: agent-1 obtains a grant for a file of agent-0 via Data.Offer; agent-2
    presents that grant in Data.Fetch (whole file, a relpath, an offset).
    Check: PERMISSION_DENIED, no chunk is sent and nothing is hashed; agent-1 can
    still fetch with its own grant."""
    async with mesh(tmp_path, 3) as (a0, a1, a2):
        blob = os.urandom(2 * MiB)
        (a0.data_dir / "f.bin").write_bytes(blob)
        chunks: list[int] = []

        def count(i: int, m: data_pb2.Chunk) -> data_pb2.Chunk:
            chunks.append(i)
            return m

        a0.data_servicer.fault = count
        async with as_agent(a1, a0) as ch1, as_agent(a2, a0) as ch2:
            s1, s2 = data_pb2_grpc.DataStub(ch1), data_pb2_grpc.DataStub(ch2)
            offer = await s1.Offer(data_pb2.OfferRequest(path="f.bin"), timeout=5)
            hashed = a0.datasvc.catalog.hashes_computed
            for req in (
                data_pb2.FetchRequest(grant=offer.grant),
                data_pb2.FetchRequest(grant=offer.grant, offset=MiB),
                data_pb2.FetchRequest(grant=offer.grant, relpath="x"),
            ):
                assert await code_of(s2.Fetch(req, timeout=5)) == C.PERMISSION_DENIED
            assert chunks == []
            assert a0.datasvc.catalog.hashes_computed == hashed
            got = b"".join(
                [c.data async for c in s1.Fetch(data_pb2.FetchRequest(grant=offer.grant))]
            )
            assert got == blob
        await still_serving(a0)


# ------------------------------------------------------------------ path traversal: Data
BAD_PATHS = [
    "../../etc/passwd",
    "../secret.txt",
    "d/../../secret.txt",
    "agent://../x",
    "/etc/passwd",
    "/dev/zero",
    "a\x00b",
    "escape/x",
]


async def test_path_traversal_in_data_rpcs(tmp_path: Path) -> None:
    """Inject: traversal in every Data path field (Offer/Stat/List/Push path, Fetch
    relpath): ``..``, absolute paths outside the roots, NUL bytes, a symlink that
    leaves @agentdir, and an absolute path to a directory beside the agent home.
    Check: INVALID_ARGUMENT / PERMISSION_DENIED (or NOT_FOUND for a relative name
    that simply does not exist), no file outside the roots is read or written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    async with mesh(tmp_path, 2) as (a0, a1):
        data = a0.data_dir
        (data / "d").mkdir()
        (data / "d" / "in.txt").write_text("in")
        os.symlink(outside, data / "escape")
        paths = [*BAD_PATHS, str(outside / "secret.txt"), str(outside / "new.txt")]
        before = tree(outside)
        async with as_agent(a1, a0) as ch:
            s = data_pb2_grpc.DataStub(ch)
            offer = await s.Offer(data_pb2.OfferRequest(path="d"), timeout=5)
            hashed = a0.datasvc.catalog.hashes_computed
            for p in paths:
                for call in (
                    s.Offer(data_pb2.OfferRequest(path=p), timeout=5),
                    s.Stat(data_pb2.StatRequest(path=p), timeout=5),
                    s.List(data_pb2.ListRequest(path=p), timeout=5),
                ):
                    code = await code_of(call)
                    assert code in REFUSED | {C.NOT_FOUND}, (p, code)
                    if p.startswith("/") or ".." in p or "escape" in p:
                        assert code in REFUSED, (p, code)

                async def push(path: str = p) -> AsyncIterator[data_pb2.PushChunk]:
                    yield data_pb2.PushChunk(path=path, size=1, sha256="0" * 64, data=b"x")

                assert await code_of(s.Push(push(), timeout=5)) in REFUSED, p
            for rel in ("../d/in.txt", "../../escape/secret.txt", "/etc/passwd", "a\x00b"):
                req = data_pb2.FetchRequest(grant=offer.grant, relpath=rel)
                assert await code_of(s.Fetch(req, timeout=5)) in REFUSED, rel
        assert tree(outside) == before
        assert (outside / "secret.txt").read_text() == "secret"
        assert a0.datasvc.catalog.hashes_computed == hashed
        await still_serving(a0)


# ------------------------------------------------------------------ path traversal: activities
def shell(name: str, cmd: str = "true", **kw: Any) -> S.ActivitySpec:
    return S.ActivitySpec(name=name, shell=S.ShellSpec(cmd=cmd), **kw)


async def submit_code(
    stub: campaigns_pb2_grpc.CampaignsStub, act: S.ActivitySpec
) -> grpc.StatusCode:
    return await code_of(
        stub.Submit(campaigns_pb2.SubmitRequest(name="evil", activities=[act]), timeout=5)
    )


async def run_one(
    stub: campaigns_pb2_grpc.CampaignsStub, act: S.ActivitySpec
) -> campaigns_pb2.ActivityStatus:
    resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="evil", activities=[act]), timeout=5)
    async for _ in stub.Watch(
        campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
    ):
        pass
    status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
    return status.activities[0]


async def test_path_traversal_in_activity_fields(tmp_path: Path) -> None:
    """Inject: traversal in ActivitySpec.working_dir/output_dir/data_uris/script_uri/
    wf_uri and TransferSpec.source/dest: ``..`` (plain, after an escape, inside an
    agent URI), NUL bytes, unknown escapes, absolute paths outside the contractor's
    roots, a symlink inside @agentdir that leaves it, and agent URIs for files
    outside the holder's roots.
    Check: malformed values are INVALID_ARGUMENT at Submit (nothing stored); values
    only the contractor can judge end FAILED with a "outside"/permission message;
    no file or directory is created outside the roots; the agent keeps serving."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    async with mesh(tmp_path, 2) as (a0, a1):
        os.symlink(outside, a0.data_dir / "escape")
        os.symlink(outside, a1.data_dir / "escape")
        before = tree(outside)
        at_submit = [
            shell("w1", working_dir="../x"),
            shell("w2", working_dir="@agentdir/../../x"),
            shell("w3", working_dir="/tmp/a/../../etc"),
            shell("w4", working_dir="a\x00b"),
            shell("w5", working_dir="@nowhere/x"),
            shell("o1", output_dir="@workingdir/../../x"),
            shell("o2", output_dir="../../x"),
            shell("d1", data_uris=["../../etc/passwd"]),
            shell("d2", data_uris=["agent://../x"]),
            shell("d3", data_uris=["agent-0://a/../../x"]),
            shell("d4", data_uris=["agent-0://a\x00b"]),
            shell("d5", data_uris=["/etc/passwd"]),
            S.ActivitySpec(name="s1", shell=S.ShellSpec(script_uri="../../etc/passwd")),
            S.ActivitySpec(name="s2", python=S.PythonSpec(script_uri="agent-0://../../x.py")),
            S.ActivitySpec(
                name="f1", workflow=S.WorkflowSpec(wf_manager="dask", wf_uri="agent://../x")
            ),
            S.ActivitySpec(
                name="t1", transfer=S.TransferSpec(source="../../etc/passwd", dest="agent-1://x")
            ),
            S.ActivitySpec(
                name="t2", transfer=S.TransferSpec(source="agent-0://f", dest="agent-1://../x")
            ),
        ]
        at_staging = [
            shell("x1", working_dir=str(outside / "w"), agent="agent-1"),
            shell("x2", output_dir=str(outside / "o"), agent="agent-1"),
            shell("x3", working_dir="@agentdir/escape/w", agent="agent-1"),
            shell("x4", output_dir="@agentdir/escape/o", agent="agent-0"),
            shell("x5", data_uris=[f"agent-0://{outside}/secret.txt"], agent="agent-1"),
            shell("x6", data_uris=[f"agent-0://{outside}/secret.txt"], agent="agent-0"),
            shell("x7", data_uris=["agent-0://escape/secret.txt"], agent="agent-0"),
            S.ActivitySpec(
                name="x8",
                transfer=S.TransferSpec(
                    source=f"agent-0://{outside}/secret.txt", dest="agent-1://got"
                ),
            ),
            S.ActivitySpec(
                name="x9",
                transfer=S.TransferSpec(source="agent-0://escape", dest="agent-1://got"),
            ),
            S.ActivitySpec(
                name="x10",
                transfer=S.TransferSpec(source="agent-1://escape/secret.txt", dest="agent-1://g"),
            ),
            S.ActivitySpec(
                name="x11",
                transfer=S.TransferSpec(source="agent-0://nothing", dest=f"agent-1://{outside}/t"),
            ),
        ]
        async with local(a0) as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            for act in at_submit:
                assert await submit_code(stub, act) == C.INVALID_ARGUMENT, act.name
            listed = await stub.ListCampaigns(campaigns_pb2.ListCampaignsRequest())
            assert list(listed.campaigns) == []  # nothing stored
            for act in at_staging:
                status = await run_one(stub, act)
                assert status.state == S.ACTIVITY_STATE_FAILED, (act.name, status)
                text = status.message.lower()
                assert "outside" in text or "permission" in text or "leaves" in text, (
                    act.name,
                    status.message,
                )
        assert tree(outside) == before
        assert not (a1.data_dir / "got").exists() or not any((a1.data_dir / "got").iterdir())
        await still_serving(a0)


# ------------------------------------------------------------------ oversized / huge fields
async def test_oversized_and_huge_requests(tmp_path: Path) -> None:
    """Inject: a Submit larger than max_message_bytes (1 MiB here), and requests
    within the limit but with huge repeated fields: 100k depends_on, 10k data_uris,
    100k requires.labels, 20k activities, a 50k-tender CallForProposals, a 50k-event
    ReportStatus and a Gossip with 50k updates.
    Check: RESOURCE_EXHAUSTED / INVALID_ARGUMENT, each within 5 s, no campaign stored,
    no journal row written, and the agent keeps serving."""

    def configure(i: int) -> dict[str, object]:
        return {"max_message_bytes": MiB + 512 * 1024} if i == 0 else {}

    async with mesh(tmp_path, 2, configure=configure) as (a0, a1):
        big = shell("big", "echo " + "x" * (2 * MiB))
        huge = [
            shell("deps", depends_on=[f"a{i}" for i in range(100_000)]),
            shell("uris", data_uris=[f"agent-0://f{i}" for i in range(10_000)]),
            shell("labels", requires=S.Requirements(labels={f"k{i}": "v" for i in range(100_000)})),
        ]
        many = [shell(f"a{i}") for i in range(20_000)]
        async with local(a0) as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            t = time.monotonic()
            code = await submit_code(stub, big)
            assert code == C.RESOURCE_EXHAUSTED, code
            for act in huge:
                assert len(act.SerializeToString()) < MiB + 512 * 1024
                t = time.monotonic()
                code = await submit_code(stub, act)
                assert code in {C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}, (act.name, code)
                assert time.monotonic() - t < 5, act.name
            t = time.monotonic()
            req = campaigns_pb2.SubmitRequest(name="many", activities=many)
            code = await code_of(stub.Submit(req, timeout=10))
            assert code in {C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}, code
            assert time.monotonic() - t < 5
            listed = await stub.ListCampaigns(campaigns_pb2.ListCampaignsRequest())
            assert list(listed.campaigns) == []
        async with as_agent(a1, a0) as ch:
            tender = scheduling_pb2.Tender(campaign_id="c", activity="a", attempt=1)
            cfp = scheduling_pb2.CallForProposalsRequest(monitor=a1.name, tenders=[tender] * 50_000)
            ev = scheduling_pb2.ContractorEvent(outbox_seq=1, event=S.Event(campaign_id="c"))
            rep = scheduling_pb2.ReportStatusRequest(contractor=a1.name, events=[ev] * 50_000)
            upd = membership_pb2.MemberUpdate(
                kind=membership_pb2.MemberUpdate.KIND_SUSPECT, name="ghost", incarnation=1
            )
            gos = _gossip_req(a1.name, [upd] * 50_000)
            for method, msg in (
                ("/zambeze_mesh.v1.Scheduling/CallForProposals", cfp),
                ("/zambeze_mesh.v1.Scheduling/ReportStatus", rep),
                ("/zambeze_mesh.v1.Membership/Gossip", gos),
            ):
                t = time.monotonic()
                code = await raw_call(ch, method, "uu", msg.SerializeToString())
                assert code in {C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}, (method, code)
                assert time.monotonic() - t < 5, method
        assert _rows(a0.home.db, "campaigns") == 0
        assert _rows(a0.home.db, "events") == 0
        assert "ghost" not in view(a0)
        await still_serving(a0)


def _rows(db: Path, table: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        n: int = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return n
    finally:
        con.close()


# ------------------------------------------------------------------ slow readers (process)
def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_readers_are_bounded(procmesh: ProcMesh) -> None:
    """Inject: agent b opens 20 Data.Fetch streams of a 48 MiB file on the holder
    (a real agent process with the default max_streams_per_peer = 16 and a 3 s
    stream idle timeout) and never reads them (slowloris).
    Check: streams beyond 16 get RESOURCE_EXHAUSTED at once; the holder's RSS grows
    by less than 12 MiB per stuck stream (not by the file size); agent c is served
    the whole file meanwhile; after the idle timeout the stuck streams are ended, so
    b can fetch again."""
    from zambeze_mesh.settings.config import AgentConfig

    a = procmesh.init("a")
    cfg_path = a.home / "config.toml"
    cfg = AgentConfig.load(cfg_path)
    cfg.stream_idle_timeout_s = 3.0
    cfg.zeroconf = False
    cfg.save(cfg_path)
    a.start()
    b = procmesh.join("b", a)
    c = procmesh.join("c", a)
    blob = os.urandom(48 * MiB)
    data_dir = a.home / cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "big.bin").write_bytes(blob)
    assert a.pid is not None
    with (
        grpc.secure_channel(a.address, home_credentials(b.home)) as chb,
        grpc.secure_channel(a.address, home_credentials(c.home)) as chc,
    ):
        sb, sc = data_pb2_grpc.DataStub(chb), data_pb2_grpc.DataStub(chc)
        grant = sb.Offer(data_pb2.OfferRequest(path="big.bin"), timeout=10).grant
        rss0 = _rss_bytes(a.pid)
        calls = [sb.Fetch(data_pb2.FetchRequest(grant=grant), timeout=60) for _ in range(20)]
        deadline = time.monotonic() + 5
        while sum(call.done() for call in calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = [call for call in calls if call.done()]
        assert len(refused) == 4, [call.done() for call in calls]
        assert all(call.code() == C.RESOURCE_EXHAUSTED for call in refused)
        assert "streams open" in (refused[0].details() or "")
        time.sleep(1)
        stuck = _rss_bytes(a.pid) - rss0
        # Buffering whole files would cost 16 x 48 MiB; the flow-controlled window
        # of a stream is a few MiB.
        assert stuck < 16 * 12 * MiB, stuck / MiB
        # Another peer is served meanwhile.
        cg = sc.Offer(data_pb2.OfferRequest(path="big.bin"), timeout=10).grant
        t = time.monotonic()
        got = b"".join(ch.data for ch in sc.Fetch(data_pb2.FetchRequest(grant=cg), timeout=30))
        assert got == blob, "c was not served the whole file"
        assert time.monotonic() - t < 20
        assert _rss_bytes(a.pid) - rss0 < 16 * 12 * MiB + 48 * MiB
        # After the idle timeout the holder has dropped b's stuck streams.
        time.sleep(4)
        with grpc.secure_channel(a.address, home_credentials(b.home)) as ch2:
            s2 = data_pb2_grpc.DataStub(ch2)
            got2 = [
                ch.data
                for ch in s2.Fetch(data_pb2.FetchRequest(grant=grant, offset=47 * MiB), timeout=30)
            ]
            assert b"".join(got2) == blob[47 * MiB :]
        for call in calls:
            call.cancel()
    os.kill(a.pid, 0)  # the holder is still alive


# ------------------------------------------------------------------ floods
GARBAGE_SPECS = [
    S.ActivitySpec(),  # no name, no body
    S.ActivitySpec(name="x"),  # no body
    S.ActivitySpec(name="../../x", shell=S.ShellSpec(cmd="true")),
    S.ActivitySpec(name="x", shell=S.ShellSpec(cmd="true"), working_dir="../../etc"),
    S.ActivitySpec(name="x", shell=S.ShellSpec(cmd="true"), retries=99),
    S.ActivitySpec(name="x", python=S.PythonSpec(function=b"\x00garbage", script_uri="a://b")),
    S.ActivitySpec(name="x", shell=S.ShellSpec(cmd="true"), timeout_s=float("nan")),
    S.ActivitySpec(name="x", shell=S.ShellSpec(cmd="true"), data_uris=["/etc/passwd"]),
]


def _tenders(i: int, n: int) -> list[scheduling_pb2.Tender]:
    return [
        scheduling_pb2.Tender(
            campaign_id=f"flood{i}",
            activity=f"a{j}",
            attempt=1,
            spec=GARBAGE_SPECS[(i + j) % len(GARBAGE_SPECS)],
        )
        for j in range(n)
    ]


async def test_floods_of_tenders_awards_and_reports(tmp_path: Path) -> None:
    """Inject: agent-2 (a genuine agent identity) floods agent-1's contractor with
    1,000 CallForProposals of 25 garbage tenders each (25k tenders) and 400 Awards
    of 25 garbage items, and floods agent-0's monitor with 1,000 ReportStatus calls
    (20 events each) about campaigns that do not exist and about a real activity
    that agent-1 is running (SUCCEEDED/FAILED/CANCELLED claims, stale and future
    attempts), while that activity runs.
    Check: every call is answered within bounded time; every tender is refused and
    every award rejected with a reason; agent-1 stores no contract; the monitor
    acks but ignores the reports: the campaign's journal has no event from agent-2,
    no journal row exists for the fake campaigns, and the real activity ends
    SUCCEEDED on agent-1."""
    async with mesh(tmp_path, 3) as (a0, a1, a2):
        async with local(a0) as ch0, as_agent(a2, a1) as ch1, as_agent(a2, a0) as ch2:
            camp = campaigns_pb2_grpc.CampaignsStub(ch0)
            resp = await camp.Submit(
                campaigns_pb2.SubmitRequest(
                    name="victim", activities=[shell("slow", "sleep 3", agent="agent-1")]
                )
            )
            cid = resp.campaign_id

            async def running() -> bool:
                st = await camp.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
                return st.activities[0].state == S.ACTIVITY_STATE_RUNNING

            deadline = time.monotonic() + 20
            while not await running():
                assert time.monotonic() < deadline, "victim never ran"
                await asyncio.sleep(0.05)

            sched1 = scheduling_pb2_grpc.SchedulingStub(ch1)
            sched0 = scheduling_pb2_grpc.SchedulingStub(ch2)
            t = time.monotonic()

            async def cfp(i: int) -> None:
                req = scheduling_pb2.CallForProposalsRequest(
                    monitor=a2.name, tenders=_tenders(i, 25)
                )
                answer = await sched1.CallForProposals(req, timeout=30)
                assert len(answer.bids) == 25
                assert all(b.refused and b.reason for b in answer.bids), answer

            async def award(i: int) -> None:
                items = [
                    scheduling_pb2.AwardItem(tender=t, monitor=a2.name) for t in _tenders(i, 25)
                ]
                answer = await sched1.Award(
                    scheduling_pb2.AwardRequest(monitor=a2.name, items=items), timeout=30
                )
                assert all(not d.accepted and d.reason for d in answer.decisions), answer

            states = [S.ACTIVITY_STATE_SUCCEEDED, S.ACTIVITY_STATE_FAILED, 10, 999]

            async def report(i: int) -> None:
                events = []
                for j in range(20):
                    real = j % 2 == 0
                    events.append(
                        scheduling_pb2.ContractorEvent(
                            outbox_seq=i * 100 + j,
                            event=S.Event(
                                campaign_id=cid if real else f"ghost{i}-{j}",
                                activity="slow" if real else "x",
                                state=states[j % len(states)],  # type: ignore[arg-type]
                                attempt=(0, 1, 2, 7)[j % 4],
                                agent=a2.name,
                                message="pwned",
                            ),
                        )
                    )
                req = scheduling_pb2.ReportStatusRequest(contractor=a2.name, events=events)
                answer = await sched0.ReportStatus(req, timeout=30)
                assert len(answer.acked) in (0, 20)

            for batch in range(10):
                await asyncio.gather(*(cfp(batch * 100 + i) for i in range(100)))
            for batch in range(4):
                await asyncio.gather(*(award(batch * 100 + i) for i in range(100)))
            for batch in range(10):
                await asyncio.gather(*(report(batch * 100 + i) for i in range(100)))
            elapsed = time.monotonic() - t
            assert elapsed < 60, elapsed
            assert a1.store is not None and a0.store is not None
            assert _rows(a1.home.db, "contracts") == 1  # only the genuine award
            events = [
                ev
                async for ev in camp.Watch(campaigns_pb2.WatchRequest(campaign_id=cid, follow=True))
            ]
            assert events[-1].campaign_state == S.CAMPAIGN_STATE_SUCCEEDED, events[-1]
            assert all(ev.agent != a2.name and ev.message != "pwned" for ev in events), events
            con = sqlite3.connect(f"file:{a0.home.db}?mode=ro", uri=True)
            try:
                ghosts = con.execute(
                    "SELECT count(*) FROM events WHERE campaign_id LIKE 'ghost%'"
                ).fetchone()[0]
            finally:
                con.close()
            assert ghosts == 0
        await still_serving(a0)
        await still_serving(a1)
