"""Attacks on membership and admission by a member gone rogue, over real agent processes.

Each test names what it injects and what it checks. The attacker holds one member's
key and certificate (read from that member's home) and calls the other agents with raw
gRPC stubs; everyone else runs the unmodified ``zmesh`` agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tests.helpers.creds import home_credentials
from tests.helpers.inproc import mesh, wait_until
from tests.helpers.ports import free_port_pair
from tests.helpers.procs import ProcAgent, ProcMesh, zmesh
from tests.system.test_attacks import _gossip_req, raw_call
from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.agent.join import join_mesh
from zambeze_mesh.errors import NotPermitted, Unauthenticated, ZmeshError
from zambeze_mesh.membership.rules import MAX_INCARNATION
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.keys import generate_key, make_csr
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store.tokens import create_token
from zambeze_mesh.v1 import membership_pb2, membership_pb2_grpc

C = grpc.StatusCode
Update = membership_pb2.MemberUpdate


# ------------------------------------------------------------------ helpers
def ca_digest_of(agent: ProcAgent) -> str:
    import hashlib

    store = open_store(Home(agent.home))
    try:
        return hashlib.sha256(idstore.load_identity(store).ca_cert_der).hexdigest()
    finally:
        store.close()


def views(pm: ProcMesh) -> dict[str, dict[str, str]]:
    """Every running agent's view: viewer -> member -> status."""
    return {a.name: a.statuses() for a in pm.agents.values() if a.pid is not None}


def everyone_sees(pm: ProcMesh, name: str, status: str) -> bool:
    return all(v.get(name) == status for v in views(pm).values())


def formed(pm: ProcMesh, n: int) -> list[ProcAgent]:
    """``n`` running agents: agent a creates the mesh, the others join through a."""
    first = pm.init("a")
    first.start()
    agents = [first]
    for name in "bcdefg"[: n - 1]:
        agent = pm.join(name, first)
        agent.start()
        agents.append(agent)
    names = {a.name for a in agents}
    pm.wait_for(
        lambda: all(set(v) == names and set(v.values()) == {"alive"} for v in views(pm).values()),
        30,
        "every agent alive everywhere",
    )
    return agents


# ------------------------------------------------------------------ token bypass
def test_forwarded_join_without_a_token_proof_is_refused(procmesh: ProcMesh) -> None:
    """Inject: member b calls Membership/Join on the CA holder a over mTLS as if it
    forwarded a joiner (hops=1, vouched=true) with a zero token id and a zero proof, a
    free name and its own CSR. Check: UNAUTHENTICATED, no certificate, the name does
    not appear in any view, and a genuine join through b (forwarded) still works."""
    a, b = formed(procmesh, 2)
    csr = make_csr(generate_key(), Identity.agent("test", "mallory"))
    req = membership_pb2.JoinRequest(
        ca_digest=ca_digest_of(a),
        token_id="0" * 32,
        proof=b"\0" * 32,
        csr_der=csr,
        name="mallory",
        advertise="127.0.0.1:9",
        time_unix_ms=int(time.time() * 1000),
        hops=1,
        vouched=True,
    )

    async def attack() -> tuple[grpc.StatusCode, membership_pb2.JoinResponse | None]:
        async with grpc.aio.secure_channel(a.address, home_credentials(b.home)) as ch:
            try:
                resp = await membership_pb2_grpc.MembershipStub(ch).Join(req, timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), None
            return C.OK, resp

    code, resp = asyncio.run(attack())
    assert code == C.UNAUTHENTICATED, (code, resp)
    assert "mallory" not in a.statuses()
    c = procmesh.join("c", b)  # a genuine join forwarded by b: a checks c's own proof
    c.start()
    procmesh.wait_for(lambda: everyone_sees(procmesh, "c", "alive"), 30, "c alive everywhere")
    assert "mallory" not in a.statuses()


# ------------------------------------------------------------------ signed deaths
def test_dead_at_a_huge_incarnation_does_not_evict(procmesh: ProcMesh) -> None:
    """Inject: member b gossips ``DEAD c`` at incarnation 2**48 (the largest the wire
    check lets through) to a and to c, twice. Check: c stays ALIVE in every view with a
    small incarnation (it never signs anything near the accuser's number); after a
    restart c is ALIVE everywhere again."""
    a, b, c = formed(procmesh, 3)
    dead = Update(kind=Update.KIND_DEAD, name="c", incarnation=MAX_INCARNATION)
    setattr(dead, "from", "b")

    async def attack() -> None:
        for target in (a, c, a, c):
            async with grpc.aio.secure_channel(target.address, home_credentials(b.home)) as ch:
                stub = membership_pb2_grpc.MembershipStub(ch)
                await stub.Gossip(_gossip_req("b", [dead]), timeout=5)
            await asyncio.sleep(0.2)

    asyncio.run(attack())
    deadline = time.monotonic() + 6  # several gossip and probe rounds
    while time.monotonic() < deadline:
        assert everyone_sees(procmesh, "c", "alive"), views(procmesh)
        time.sleep(0.5)
    incs = {m["incarnation"] for agent in (a, b, c) for m in agent.members() if m["name"] == "c"}
    assert max(incs) < 1000, incs
    c.stop()
    c.start()
    procmesh.wait_for(
        lambda: everyone_sees(procmesh, "c", "alive"), 30, "c alive everywhere after a restart"
    )


# ------------------------------------------------------------------ names bound to keys
def _join_as(pm: ProcMesh, name: str, seed: ProcAgent, home_name: str) -> tuple[int, str]:
    """``zmesh join`` a fresh home (a new key) under ``name``; (exit code, stderr)."""
    home = pm.root / home_name
    proc = zmesh(
        "join", seed.address, "--token", pm.token(pm.ca_holder or seed), "--name", name,
        "--listen", f"127.0.0.1:{free_port_pair()}", home=home, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stderr


def test_dead_name_cannot_be_taken_by_another_key(procmesh: ProcMesh) -> None:
    """Inject: c is killed (-9) and seen DEAD everywhere; a newcomer with a valid token
    and its own key asks the CA holder for the name ``c``, directly and through b.
    Check: refused (the name is bound to c's key); once the operator retires the name
    with ``zmesh members remove c``, the same newcomer is admitted."""
    a, b, c = formed(procmesh, 3)
    c.kill9()
    procmesh.wait_for(lambda: everyone_sees(procmesh, "c", "dead"), 30, "c dead everywhere")
    for seed, home in ((a, "thief-direct"), (b, "thief-forwarded")):
        code, err = _join_as(procmesh, "c", seed, home)
        assert code != 0 and "another key" in err, err
        assert not (procmesh.root / home / "zmesh.db").exists()
    zmesh("members", "remove", "c", home=a.home)
    code, err = _join_as(procmesh, "c", b, "newcomer")
    assert code == 0, err


def test_revoked_certificate_is_refused_by_every_agent(procmesh: ProcMesh) -> None:
    """Inject: the operator runs ``zmesh members remove c`` on the CA holder a while c
    runs; c's own key and certificate then call an agent RPC (Membership/Ping) and a
    client RPC (Campaigns/ListMembers) on a and on b. Check: within seconds every call
    is UNAUTHENTICATED on both, and c is gone (LEFT) from a's and b's views."""
    a, b, c = formed(procmesh, 3)
    creds = home_credentials(c.home)
    out = zmesh("members", "remove", "c", home=a.home).stdout
    assert "removed c" in out, out

    async def codes() -> set[grpc.StatusCode]:
        found = set()
        for target in (a, b):
            async with grpc.aio.secure_channel(target.address, creds) as ch:
                found.add(await raw_call(ch, "/zambeze_mesh.v1.Membership/Ping", "uu", b""))
                found.add(await raw_call(ch, "/zambeze_mesh.v1.Campaigns/ListMembers", "uu", b""))
        return found

    procmesh.wait_for(
        lambda: asyncio.run(codes()) == {C.UNAUTHENTICATED}, 15, "c's certificate refused"
    )
    procmesh.wait_for(
        lambda: a.statuses().get("c", "left") == "left" and b.statuses().get("c", "left") == "left",
        15,
        "c gone from a's and b's views",
    )
    assert asyncio.run(codes()) == {C.UNAUTHENTICATED}


# ------------------------------------------------------------------ tokens
async def test_single_use_token_is_refused_the_second_time(tmp_path: Path) -> None:
    """Inject: a token created with ``uses=1`` (``zmesh token create --uses 1``) admits
    one agent, then a second joiner presents it. Check: UNAUTHENTICATED saying it was
    used up, nothing written to the second home, the mesh does not grow; a token on an
    agent without the CA key cannot be created at all."""
    async with mesh(tmp_path, 2) as (a0, a1):
        store = open_store(a0.home)
        try:
            token = create_token(store, 3600, uses=1)
        finally:
            store.close()
        await join_mesh(
            Home(tmp_path / "first"), a1.address, token, name="first", listen="127.0.0.1:0"
        )
        home = Home(tmp_path / "second")
        with pytest.raises(ZmeshError) as err:
            await join_mesh(home, a0.address, token, name="second", listen="127.0.0.1:0")
        assert isinstance(err.value, Unauthenticated) and "used up" in str(err.value), err.value
        assert not home.db.exists()
        assert a0.gossip is not None
        assert "second" not in {m.name for m in a0.gossip.members()}
        store = open_store(a1.home)
        try:
            with pytest.raises(NotPermitted, match="CA key"):
                create_token(store, 3600)
        finally:
            store.close()


# ------------------------------------------------------------------ admission listener
async def test_admission_port_reveals_nothing_and_is_rate_limited(tmp_path: Path) -> None:
    """Inject: an anonymous caller on the admission port asks for health, reflection and
    (with a wrong CA digest) the CA certificate, then fires 1,000 quick Join calls.
    Check: nothing is answered (UNAUTHENTICATED, the mesh name never appears); most of
    the flood gets RESOURCE_EXHAUSTED with a retry hint; agent.log grows by a few lines,
    not one per call; after the hinted wait a genuine join succeeds."""
    async with mesh(tmp_path, 1) as (a0,):
        assert a0.ca is not None
        async with grpc.aio.insecure_channel(a0.admission_address) as ch:
            stub = membership_pb2_grpc.MembershipStub(ch)
            health = "/grpc.health.v1.Health/Check"
            assert await raw_call(ch, health, "uu", b"") == C.UNAUTHENTICATED
            reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            assert await raw_call(ch, reflection, "ss", b"") == C.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Join(membership_pb2.JoinRequest(ca_digest="0" * 64), timeout=5)
            assert err.value.code() == C.UNAUTHENTICATED
            assert "test" not in (err.value.details() or "")
            assert not err.value.trailing_metadata()

            log_before = a0.home.log.stat().st_size
            flood = membership_pb2.JoinRequest(ca_digest=a0.ca.digest, name="x")

            async def one() -> tuple[grpc.StatusCode, str]:
                try:
                    await stub.Join(flood, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details() or ""
                return C.OK, ""

            results = []
            for _ in range(10):
                results += await asyncio.gather(*(one() for _ in range(100)))
        limited = [d for c, d in results if c == C.RESOURCE_EXHAUSTED]
        assert len(limited) >= 900, len(limited)
        assert all("retry in" in d for d in limited)
        grown = a0.home.log.stat().st_size - log_before
        assert grown < 20_000, grown  # was ~145 B per call
        await asyncio.sleep(1.0)
        store = open_store(a0.home)
        try:
            token = create_token(store, 3600)
        finally:
            store.close()
        await join_mesh(
            Home(tmp_path / "late"), a0.address, token, name="late", listen="127.0.0.1:0"
        )


def test_agent_log_rotates(procmesh: ProcMesh) -> None:
    """Inject: an agent configured with ``log_max_bytes = 4096`` logs a few hundred
    events (each anonymous pin call logs one). Check: agent.log stays under the limit,
    at most ``log_backups`` old files exist, and the newest lines are in agent.log."""
    a = procmesh.init("a")
    cfg = AgentConfig.load(a.home / "config.toml")
    cfg.log_max_bytes, cfg.log_backups, cfg.join_burst = 4096, 2, 1000
    cfg.save(a.home / "config.toml")
    a.start()

    async def pins() -> None:
        digest = ca_digest_of(a)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.port + 1}") as ch:
            stub = membership_pb2_grpc.MembershipStub(ch)
            for i in range(300):
                await stub.Join(
                    membership_pb2.JoinRequest(ca_digest=digest, name=f"n{i}"), timeout=5
                )

    asyncio.run(pins())
    time.sleep(0.5)
    logs = sorted(p.name for p in a.home.iterdir() if p.name.startswith("agent.log"))
    assert logs == ["agent.log", "agent.log.1", "agent.log.2"], logs
    assert (a.home / "agent.log").stat().st_size <= 4096
    assert '"n299"' in (a.home / "agent.log").read_text()


# ------------------------------------------------------------------ operator approval
def test_join_waits_for_operator_approval(procmesh: ProcMesh) -> None:
    """Inject: the CA holder is configured with ``join_approval = true`` and b joins with
    a valid token. Check: ``zmesh join`` waits (no certificate, nothing in b's home) and
    ``zmesh members pending`` on the CA holder lists b; after ``zmesh members approve b``
    the join completes and b runs as a member."""
    a = procmesh.init("a")
    cfg = AgentConfig.load(a.home / "config.toml")
    cfg.join_approval = True
    cfg.save(a.home / "config.toml")
    a.start()
    b = ProcAgent("b", procmesh.root / "b", free_port_pair())
    cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(b.home), "join",
           a.address, "--name", "b", "--listen", b.address]  # fmt: skip
    env = {**os.environ, "ZMESH_TOKEN": procmesh.token(a)}
    joiner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        procmesh.wait_for(
            lambda: [p["name"] for p in json.loads(
                zmesh("members", "pending", "--json", home=a.home).stdout
            )] == ["b"],
            30,
            "b pending on the CA holder",
        )  # fmt: skip
        time.sleep(1.5)
        assert joiner.poll() is None  # still waiting
        assert not (b.home / "config.toml").exists()
        zmesh("members", "approve", "b", home=a.home)
        _out, err = joiner.communicate(timeout=30)
    finally:
        if joiner.poll() is None:
            joiner.kill()
    assert joiner.returncode == 0, err
    assert b"awaits operator approval" in err
    procmesh.agents["b"] = b
    b.start()
    procmesh.wait_for(lambda: everyone_sees(procmesh, "b", "alive"), 30, "b alive everywhere")
    assert json.loads(zmesh("members", "pending", "--json", home=a.home).stdout) == []


def test_restart_comes_back_even_with_a_poisoned_incarnation(procmesh: ProcMesh) -> None:
    """Inject: c is stopped and its stored incarnation set to 2**48 + 1, as the
    eviction attack left it on earlier versions (its refutations were dropped
    everywhere). Check: after a restart c is ALIVE in every view with a small
    incarnation."""
    a, b, c = formed(procmesh, 3)
    c.stop()
    procmesh.wait_for(lambda: everyone_sees(procmesh, "c", "dead"), 30, "c dead after stop")
    with sqlite3.connect(c.home / "zmesh.db") as db:
        db.execute("UPDATE identity SET incarnation = ?", (MAX_INCARNATION + 1,))
    c.start()
    procmesh.wait_for(lambda: everyone_sees(procmesh, "c", "alive"), 45, "c alive again")
    incs = {m["incarnation"] for agent in (a, b, c) for m in agent.members() if m["name"] == "c"}
    assert max(incs) < 1000, incs


async def test_a_name_that_left_is_free_for_another_key(tmp_path: Path) -> None:
    """Inject: agent-1 leaves gracefully; a newcomer with another key asks for its name.
    Check: admitted (a LEFT name is free), while the admitting CA holder's own name is
    still refused."""
    async with mesh(tmp_path, 2) as (a0, a1):
        await a1.leave()
        await a1.shutdown(grace=1.0)
        assert a0.gossip is not None
        await wait_until(
            lambda: (
                {m.name: m.status for m in a0.gossip.members()}.get("agent-1") == "left"
                if a0.gossip
                else False
            ),
            10,
            "agent-1 left",
        )
        store = open_store(a0.home)
        try:
            tokens = [create_token(store, 3600) for _ in range(2)]
        finally:
            store.close()
        again = Home(tmp_path / "again")
        await join_mesh(again, a0.address, tokens[0], name="agent-1", listen="127.0.0.1:0")
        with pytest.raises(ZmeshError, match="taken by the admitting agent"):
            await join_mesh(
                Home(tmp_path / "x"), a0.address, tokens[1], name="agent-0", listen="127.0.0.1:0"
            )
