"""Fuzzing every RPC of the four services against ONE live agent process.

Module fixture: agent ``a`` (a real ``zmesh`` process, the CA holder), the identity
of a second agent ``b`` (joined, not running) for the agent-only services, and a
client certificate for ``Campaigns`` (its Unix socket for ``ListData``, ``StatData``
and ``ReadData``, which only the local user may call). Each test throws random and malformed
messages (``tests/system/strategies.py``) or raw random bytes at one RPC and checks:

* every call ends with a status before its deadline (no hang);
* no typed request ends in INTERNAL/UNKNOWN (an unhandled exception in a servicer);
* the process stays alive and its health check says SERVING;
* at the end: the ``campaigns`` table holds exactly the campaigns Submit accepted,
  and nothing appeared or changed outside the agent's roots.

Derandomized (``derandomize=True``) so CI runs are reproducible.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.procs import ProcMesh
from tests.system.strategies import messages, safe_overrides, submit_requests
from zambeze_mesh.agent.bootstrap import issue_client, open_store
from zambeze_mesh.security.keys import der_to_pem
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.v1 import (
    campaigns_pb2,
    data_pb2,
    data_pb2_grpc,
    membership_pb2,
    scheduling_pb2,
)

pytestmark = pytest.mark.slow

DEADLINE_S = 5.0
EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BROKEN = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
"""Statuses that mean the agent hung or crashed, for any request."""
P = "/zambeze_mesh.v1."
BROWSE = ("/ListData", "/StatData", "/ReadData")

# method -> (request class, shape: uu unary-unary, us unary-stream, su stream-unary)
RPCS: dict[str, tuple[type[Message], str]] = {
    P + "Campaigns/Submit": (campaigns_pb2.SubmitRequest, "uu"),
    P + "Campaigns/Get": (campaigns_pb2.GetCampaignRequest, "uu"),
    P + "Campaigns/Watch": (campaigns_pb2.WatchRequest, "us"),
    P + "Campaigns/Cancel": (campaigns_pb2.CancelCampaignRequest, "uu"),
    P + "Campaigns/ListCampaigns": (campaigns_pb2.ListCampaignsRequest, "uu"),
    P + "Campaigns/ListMembers": (campaigns_pb2.ListMembersRequest, "uu"),
    P + "Campaigns/ListData": (campaigns_pb2.ListDataRequest, "uu"),
    P + "Campaigns/StatData": (campaigns_pb2.StatDataRequest, "uu"),
    P + "Campaigns/ReadData": (campaigns_pb2.ReadDataRequest, "us"),
    P + "Campaigns/GetProvenance": (campaigns_pb2.GetProvenanceRequest, "uu"),
    P + "Membership/Join": (membership_pb2.JoinRequest, "uu"),
    P + "Membership/Ping": (membership_pb2.PingRequest, "uu"),
    P + "Membership/PingReq": (membership_pb2.PingReqRequest, "uu"),
    P + "Membership/Gossip": (membership_pb2.GossipRequest, "uu"),
    P + "Membership/Sync": (membership_pb2.SyncRequest, "uu"),
    P + "Membership/Leave": (membership_pb2.LeaveRequest, "uu"),
    P + "Membership/Revoke": (membership_pb2.RevokeRequest, "uu"),
    P + "Membership/PilotToken": (membership_pb2.PilotTokenRequest, "uu"),
    P + "Scheduling/CallForProposals": (scheduling_pb2.CallForProposalsRequest, "uu"),
    P + "Scheduling/Award": (scheduling_pb2.AwardRequest, "uu"),
    P + "Scheduling/ReportStatus": (scheduling_pb2.ReportStatusRequest, "uu"),
    P + "Scheduling/Cancel": (scheduling_pb2.CancelActivitiesRequest, "uu"),
    P + "Data/Offer": (data_pb2.OfferRequest, "uu"),
    P + "Data/Fetch": (data_pb2.FetchRequest, "us"),
    P + "Data/Push": (data_pb2.PushChunk, "su"),
    P + "Data/Stat": (data_pb2.StatRequest, "uu"),
    P + "Data/List": (data_pb2.ListRequest, "uu"),
}


@dataclass
class Target:
    """The live agent under fuzz and everything needed to call it."""

    pm: ProcMesh
    address: str
    pid: int
    db: Path
    root: Path
    outside: Path
    agent_ch: grpc.Channel
    client_ch: grpc.Channel
    accepted: set[str] = field(default_factory=set)
    before: dict[str, float] = field(default_factory=dict)
    last_details: str = ""
    grants: list[data_pb2.Grant] = field(default_factory=list)
    local_ch: grpc.Channel | None = None

    def channel(self, method: str) -> grpc.Channel:
        if method.endswith(BROWSE) and self.local_ch is not None:
            return self.local_ch  # only the agent's local user may browse data
        return self.client_ch if "/Campaigns/" in method else self.agent_ch

    def check_alive(self) -> None:
        os.kill(self.pid, 0)
        stub = health_pb2_grpc.HealthStub(self.client_ch)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE_S)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def _creds(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.ChannelCredentials:
    return channel_credentials(key_pem, cert_pem, ca_pem)


def _snapshot(root: Path, skip: list[Path]) -> dict[str, float]:
    """mtime of every path under ``root`` except below the ``skip`` directories."""
    out: dict[str, float] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if d / n not in skip]
        for n in filenames + dirnames:
            p = d / n
            out[str(p)] = p.lstat().st_mtime
    return out


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz")
    pm = ProcMesh(root)
    a = pm.init("a")
    cfg_path = a.home / "config.toml"
    cfg = AgentConfig.load(cfg_path)
    cfg.zeroconf = False
    cfg.stream_idle_timeout_s = 2.0
    cfg.save(cfg_path)
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    try:
        a.start()
        b = pm.join("b", a)
        data = a.home / cfg.data_dir
        data.mkdir(parents=True, exist_ok=True)
        (data / "f.txt").write_text("hello")
        (data / "d").mkdir(exist_ok=True)
        (data / "d" / "in.txt").write_text("in")
        os.symlink(outside, data / "escape")
        store = open_store(Home(b.home))
        try:
            ident = idstore.load_identity(store)
        finally:
            store.close()
        store = open_store(Home(a.home))
        try:
            bundle = issue_client(store, "fuzzer", root / "client")
        finally:
            store.close()
        ca_pem = der_to_pem(ident.ca_cert_der)
        agent_ch = grpc.secure_channel(
            a.address, _creds(ident.key_pem, der_to_pem(ident.cert_der), ca_pem)
        )
        client_ch = grpc.secure_channel(
            a.address,
            _creds(bundle.key.read_bytes(), bundle.cert.read_bytes(), bundle.ca.read_bytes()),
        )
        assert a.pid is not None
        t = Target(pm, a.address, a.pid, a.home / "zmesh.db", root, outside, agent_ch, client_ch)
        t.local_ch = grpc.insecure_channel(f"unix:{a.home / 'agent.sock'}")
        t.before = _snapshot(root, [a.home, b.home])
        data_stub = data_pb2_grpc.DataStub(agent_ch)
        for path in ("f.txt", "d"):
            offer = data_stub.Offer(data_pb2.OfferRequest(path=path), timeout=DEADLINE_S)
            t.grants.append(offer.grant)
        t.check_alive()
        yield t
        # Module-level invariants, after every test of the module ran.
        t.check_alive()
        con = sqlite3.connect(f"file:{t.db}?mode=ro", uri=True)
        try:
            rows = {r[0] for r in con.execute("SELECT id FROM campaigns")}
        finally:
            con.close()
        assert rows == t.accepted, rows ^ t.accepted
        assert _snapshot(root, [a.home, b.home]) == t.before
        agent_ch.close()
        client_ch.close()
        t.local_ch.close()
    finally:
        pm.stop_all()


def call(t: Target, method: str, shape: str, payload: Any) -> tuple[grpc.StatusCode, Any]:
    """One call with a deadline; (status, raw response bytes or None). ``payload`` is
    raw bytes or a message (a list of either for client streams)."""
    ch = t.channel(method)
    raw = isinstance(payload, bytes) or (
        isinstance(payload, list) and payload and isinstance(payload[0], bytes)
    )
    ser = None if raw else (lambda m: m.SerializeToString())
    try:
        if shape == "uu":
            resp = ch.unary_unary(method, request_serializer=ser)(payload, timeout=DEADLINE_S)
            return grpc.StatusCode.OK, resp
        if shape == "us":
            out = list(ch.unary_stream(method, request_serializer=ser)(payload, timeout=DEADLINE_S))
            return grpc.StatusCode.OK, out
        items = payload if isinstance(payload, list) else [payload]
        resp = ch.stream_unary(method, request_serializer=ser)(iter(items), timeout=DEADLINE_S)
        return grpc.StatusCode.OK, resp
    except grpc.RpcError as exc:
        t.last_details = exc.details() or ""
        return exc.code(), None


def _texts(t: Target) -> list[str]:
    o = str(t.outside)
    return [o, o + "/secret.txt", o + "/new.txt", "escape/secret.txt", "a://" + o + "/secret.txt"]


def _strategy(t: Target, method: str) -> st.SearchStrategy[Any]:
    cls, shape = RPCS[method]
    extra = _texts(t)
    over = safe_overrides(extra, ["b", "a"])
    if method.endswith("/Submit"):
        return submit_requests(extra, ["a", "b"])
    one = st.tuples(messages(cls, extra_text=extra, overrides=over), st.integers(0, 9)).map(
        lambda pair: _as_b(pair[0], pair[1], t)
    )
    if shape == "su":
        return st.lists(one, min_size=0, max_size=4)
    return one


CLAIMS = ("from", "monitor", "contractor")


def _as_b(msg: Message, roll: int, t: Target) -> Message:
    """Mostly get past the caller checks: claim to be ``b`` (the caller's identity)
    and, for Fetch/Push, use a genuine grant / a well-formed header."""
    if roll < 8:
        for name in CLAIMS:
            if name in msg.DESCRIPTOR.fields_by_name:
                setattr(msg, name, "b")
        if isinstance(msg, membership_pb2.LeaveRequest):
            msg.update.name = "b"
    if roll < 6 and isinstance(msg, data_pb2.FetchRequest) and t.grants:
        msg.grant.CopyFrom(t.grants[roll % len(t.grants)])
        if msg.offset > 16:
            msg.offset %= 16
    if roll < 6 and isinstance(msg, data_pb2.PushChunk):
        msg.sha256 = hashlib.sha256(msg.data).hexdigest()
        msg.size = len(msg.data)
    return msg


@pytest.mark.parametrize("method", list(RPCS))
def test_typed_fuzz(target: Target, method: str) -> None:
    """Random/malformed typed requests: a precise status before the deadline, never
    INTERNAL/UNKNOWN; accepted campaigns are remembered for the module check."""
    _, shape = RPCS[method]

    @FUZZ
    @given(_strategy(target, method))
    def run(msg: Any) -> None:
        if shape == "su" and msg == []:
            code, _ = call(target, method, shape, [])
        else:
            code, resp = call(target, method, shape, msg)
            if code == grpc.StatusCode.OK and method.endswith("/Submit"):
                target.accepted.add(campaigns_pb2.SubmitResponse.FromString(resp).campaign_id)
        assert code not in BROKEN | {grpc.StatusCode.INTERNAL}, (
            method,
            code,
            target.last_details,
            msg,
        )

    run()
    target.check_alive()


@pytest.mark.parametrize("method", list(RPCS))
def test_raw_bytes_fuzz(target: Target, method: str) -> None:
    """Raw random bytes as the request payload: a status before the deadline (garbage
    that does not parse is refused by gRPC itself), the agent keeps serving."""
    _, shape = RPCS[method]

    @settings(FUZZ, max_examples=EXAMPLES // 2)
    @given(st.binary(max_size=256))
    def run(payload: bytes) -> None:
        code, resp = call(target, method, shape, [payload] if shape == "su" else payload)
        if code == grpc.StatusCode.OK and method.endswith("/Submit"):
            target.accepted.add(campaigns_pb2.SubmitResponse.FromString(resp).campaign_id)
        assert code not in BROKEN, (method, code, target.last_details, payload)

    run()
    target.check_alive()
