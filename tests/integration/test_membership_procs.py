"""Gossip membership through real ``zmesh`` agent processes on 127.0.0.1.

Join, crash detection (kill -9), graceful leave, restart with a higher incarnation, and
forged records pushed through the real ``Membership.Gossip`` RPC with real mTLS.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers.ports import free_port_pair
from tests.helpers.procs import ProcAgent, ProcMesh, zmesh
from zambeze_mesh.agent.bootstrap import issue_client, open_store
from zambeze_mesh.cli.local import list_members
from zambeze_mesh.cli.members import status_name
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.keys import der_to_pem, key_from_pem
from zambeze_mesh.security.records import sign_record
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store.tokens import create_token
from zambeze_mesh.v1 import common_pb2, membership_pb2, membership_pb2_grpc

View = dict[str, tuple[str, int, str]]  # member -> (status, incarnation, address)


# ------------------------------------------------------------------ helpers
def _tokens(seed: ProcAgent, n: int) -> list[str]:
    store = open_store(Home(seed.home))
    try:
        return [create_token(store, 3600) for _ in range(n)]
    finally:
        store.close()


def _ports(n: int) -> list[int]:
    """``n`` ports P with P and P+1 free, no two pairs overlapping."""
    out: list[int] = []
    while len(out) < n:
        p = free_port_pair()
        if all(abs(p - q) > 1 for q in out):
            out.append(p)
    return out


def build_mesh(pm: ProcMesh, n: int) -> list[ProcAgent]:
    """init + (n-1) concurrent joins through the first agent, all started concurrently."""
    seed = pm.init("a0")
    seed.start()
    names = [f"a{i}" for i in range(1, n)]
    tokens = _tokens(seed, len(names))
    joiners = [
        ProcAgent(nm, pm.root / nm, p) for nm, p in zip(names, _ports(len(names)), strict=True)
    ]

    def join(item: tuple[ProcAgent, str]) -> None:
        a, tok = item
        zmesh("join", seed.address, "--token", tok, "--name", a.name, "--listen", a.address,
              home=a.home)  # fmt: skip
        a.start()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(join, zip(joiners, tokens, strict=True)))
    for a in joiners:
        pm.agents[a.name] = a
    return [seed, *joiners]


def views(agents: list[ProcAgent]) -> dict[str, View]:
    """Every given agent's member view, read over the agents' Unix sockets at once."""

    async def one(a: ProcAgent) -> View:
        resp = await list_members(Home(a.home), timeout=5)
        return {m.name: (status_name(m.status), m.incarnation, m.address) for m in resp.members}

    async def every() -> list[View]:
        return list(await asyncio.gather(*(one(a) for a in agents)))

    return dict(zip([a.name for a in agents], asyncio.run(every()), strict=True))


def wait_views(
    agents: list[ProcAgent], cond: Any, timeout: float, what: str, every: float = 0.1
) -> float:
    """Poll the views until ``cond(name, view)`` holds for every agent; return seconds."""
    t0 = time.monotonic()
    last: dict[str, View] = {}
    while time.monotonic() - t0 < timeout:
        last = views(agents)
        if all(cond(name, v) for name, v in last.items()):
            return time.monotonic() - t0
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last}")


def events(a: ProcAgent, event: str, **match: object) -> list[dict[str, Any]]:
    """Log lines of ``a`` (JSON) with this event and these fields."""
    out = []
    path = a.home / "agent.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == event and all(doc.get(k) == v for k, v in match.items()):
            out.append(doc)
    return out


def all_status(names: set[str], status: str) -> Any:
    return lambda _n, v: all(v.get(m, ("",))[0] == status for m in names)


# ------------------------------------------------------------------ the life cycle
@pytest.mark.slow
def test_ten_agents_crash_leave_restart(procmesh: ProcMesh) -> None:
    t0 = time.monotonic()
    agents = build_mesh(procmesh, 10)
    names = {a.name for a in agents}
    by = {a.name: a for a in agents}
    conv = wait_views(agents, all_status(names, "alive"), 40, "all 10 alive everywhere")
    print(f"\n10 agents joined in {time.monotonic() - t0:.1f}s, converged {conv:.2f}s later")

    # kill -9: every other agent marks it dead.
    victim = by["a3"]
    inc_before = max(v[victim.name][1] for v in views(agents).values())
    others = [a for a in agents if a is not victim]
    t_kill = time.time()
    victim.kill9()
    wait_views(others, all_status({victim.name}, "dead"), 30, "a3 dead everywhere")
    detect = []
    for a in others:
        evs = [e for e in events(a, "member.dead", member=victim.name) if e["ts"] >= t_kill - 0.01]
        assert evs, f"{a.name} logged no member.dead for {victim.name}"
        detect.append(evs[0]["ts"] - t_kill)
    print(
        f"kill -9 detection: first {min(detect):.2f}s, median {statistics.median(detect):.2f}s,"
        f" last {max(detect):.2f}s"
    )
    assert max(detect) < 10, detect

    # Graceful leave: marked left, never dead.
    leaver = by["a5"]
    t_leave = time.time()
    zmesh("agent", "stop", "--leave", home=leaver.home)
    leaver.pid = None
    rest = [a for a in others if a is not leaver]
    took = wait_views(rest, all_status({leaver.name}, "left"), 20, "a5 left everywhere")
    print(f"leave seen everywhere within {took:.2f}s")
    time.sleep(1.0)  # time for a wrong suspicion to surface
    for a in rest:
        assert not [e for e in events(a, "member.dead", member=leaver.name)], a.name
        assert not [e for e in events(a, "member.suspect", member=leaver.name)
                    if e["ts"] >= t_leave], a.name  # fmt: skip
    assert all(v[leaver.name][0] == "left" for v in views(rest).values())

    # Restart the killed one: alive everywhere again, with a higher incarnation.
    victim.start()
    live = [*rest, victim]
    took = wait_views(
        live,
        lambda _n, v: v[victim.name][0] == "alive" and v[victim.name][1] > inc_before,
        30,
        "a3 alive again with a higher incarnation",
    )
    print(f"restarted agent alive everywhere within {took:.2f}s (incarnation > {inc_before})")
    final = views(live)
    for name, v in final.items():
        # the restarted agent may never have heard of a5; nobody may believe it alive
        assert v.get(leaver.name, ("left",))[0] == "left", (name, v)
        assert all(v[m][0] == "alive" for m in names - {leaver.name}), (name, v)


# ------------------------------------------------------------------ forged records
@pytest.fixture
def four(procmesh: ProcMesh) -> Iterator[list[ProcAgent]]:
    agents = build_mesh(procmesh, 4)
    names = {a.name for a in agents}
    wait_views(agents, all_status(names, "alive"), 30, "4 agents alive everywhere")
    yield agents


def _identity(a: ProcAgent) -> idstore.StoredIdentity:
    store = open_store(Home(a.home))
    try:
        return idstore.load_identity(store)
    finally:
        store.close()


def _channel(address: str, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.Channel:
    return grpc.secure_channel(address, channel_credentials(key_pem, cert_pem, ca_pem))


def _record(
    name: str, address: str, inc: int, status: int = common_pb2.MEMBER_STATUS_ALIVE
) -> common_pb2.AgentRecord:
    return common_pb2.AgentRecord(
        name=name,
        mesh="test",
        address=address,
        admission_address=address,
        incarnation=inc,
        status=status,  # type: ignore[arg-type]
        issued_unix_ms=int(time.time() * 1000),
    )


def _update(kind: int, signed: common_pb2.SignedRecord) -> membership_pb2.MemberUpdate:
    rec = common_pb2.AgentRecord()
    rec.ParseFromString(signed.record)
    u = membership_pb2.MemberUpdate(
        kind=kind,  # type: ignore[arg-type]
        name=rec.name,
        incarnation=rec.incarnation,
        signed=signed,
    )
    setattr(u, "from", "a1")
    return u


def _gossip(name: str, updates: list[membership_pb2.MemberUpdate]) -> membership_pb2.GossipRequest:
    req = membership_pb2.GossipRequest(updates=updates)
    setattr(req, "from", name)
    return req


def test_forged_records_are_rejected_everywhere(four: list[ProcAgent]) -> None:
    a0, b, c, d = four  # b (a1) forges; c (a2) is impersonated
    ident = _identity(b)
    key = key_from_pem(ident.key_pem)
    ca_pem = der_to_pem(ident.ca_cert_der)
    evil = "127.0.0.1:9"
    forged_inc = 1000

    # 1. signed with b's own key and certificate, but claiming to be c.
    as_c = sign_record(key, ident.cert_der, _record(c.name, evil, forged_inc))
    # 2. b's own record, address changed after signing.
    tampered = sign_record(key, ident.cert_der, _record(b.name, b.address, forged_inc))
    tampered.record = _record(b.name, evil, forged_inc).SerializeToString(deterministic=True)
    # 3. a certificate for c from another CA (same mesh name: a non-member).
    other = MeshCA.create("test")
    okey, ocert = other.issue(Identity.agent("test", c.name), ["127.0.0.1"])
    foreign = sign_record(okey, ocert, _record(c.name, evil, forged_inc))
    # 4. b announcing that c left.
    left_c = sign_record(
        key, ident.cert_der, _record(c.name, c.address, forged_inc, common_pb2.MEMBER_STATUS_LEFT)
    )

    kinds = membership_pb2.MemberUpdate
    about_c = [
        _update(kinds.KIND_ALIVE, as_c),
        _update(kinds.KIND_ALIVE, foreign),
        _update(kinds.KIND_LEFT, left_c),
    ]
    about_b = [_update(kinds.KIND_ALIVE, tampered)]
    before = views(four)
    targets = {a0.name: about_c + about_b, d.name: about_c + about_b, c.name: about_b}
    cert_pem = der_to_pem(ident.cert_der)
    for a in four:
        if a.name not in targets:
            continue
        with _channel(a.address, ident.key_pem, cert_pem, ca_pem) as ch:
            stub = membership_pb2_grpc.MembershipStub(ch)
            for upd in targets[a.name]:  # one per call: each must be judged on its own
                stub.Gossip(_gossip(b.name, [upd]), timeout=5)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counts = {a.name: len(events(a, "gossip.record_rejected")) for a in four}
        if all(counts[n] >= len(t) for n, t in targets.items()):
            break
        time.sleep(0.1)
    for a in four:
        if a.name not in targets:
            continue
        rejected = events(a, "gossip.record_rejected")
        assert len(rejected) >= len(targets[a.name]), (a.name, rejected)
        for member in {u.name for u in targets[a.name]}:
            assert any(e["member"] == member for e in rejected), (a.name, member, rejected)
    time.sleep(0.5)
    after = views(four)
    for name, v in after.items():
        for member in (b.name, c.name):
            status, inc, address = v[member]
            assert status == "alive", (name, member, v)
            assert inc < forged_inc, (name, member, v)
            assert address == before[name][member][2] != evil, (name, member, v)


def test_gossip_rpc_authorization(four: list[ProcAgent], tmp_path: Path) -> None:
    a0, b, c, _ = four
    ident = _identity(b)
    ca_pem = der_to_pem(ident.ca_cert_der)
    req = _gossip(c.name, [])

    # b's certificate, but the message claims to come from c.
    with _channel(a0.address, ident.key_pem, der_to_pem(ident.cert_der), ca_pem) as ch:
        with pytest.raises(grpc.RpcError) as err:
            membership_pb2_grpc.MembershipStub(ch).Gossip(req, timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value
    assert "caller" in (err.value.details() or "")

    # a client certificate of this mesh may not speak membership at all.
    store = open_store(Home(a0.home))
    try:
        bundle = issue_client(store, "alice", tmp_path / "alice")
    finally:
        store.close()
    with _channel(
        a0.address, bundle.key.read_bytes(), bundle.cert.read_bytes(), bundle.ca.read_bytes()
    ) as ch:
        stub = membership_pb2_grpc.MembershipStub(ch)
        for msg in (_gossip("alice", []), _gossip(b.name, [])):
            with pytest.raises(grpc.RpcError) as err:
                stub.Gossip(msg, timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value
    # the well-formed call with b's own name is accepted.
    with _channel(a0.address, ident.key_pem, der_to_pem(ident.cert_der), ca_pem) as ch:
        membership_pb2_grpc.MembershipStub(ch).Gossip(_gossip(b.name, []), timeout=5)
