"""Pilot tokens granted by the CA holder to another agent (``Membership.PilotToken``).

An in-process 2-agent mesh: agent-0 holds the CA key, agent-1 does not. agent-1
obtains pilot tokens from agent-0 over its agent mTLS identity; the token admits one
``agent-1-pilot-*`` join, through agent-1 as the seed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.helpers.creds import home_credentials
from tests.helpers.inproc import mesh, wait_until
from tests.helpers.ports import free_port_pair
from tests.integration.test_exec_slurm import slurm_conf  # noqa: F401
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.bootstrap import issue_client, open_store
from zambeze_mesh.agent.join import join_mesh
from zambeze_mesh.errors import (
    FailedPrecondition,
    InvalidInput,
    NotPermitted,
    ResourceExhausted,
    Unauthenticated,
)
from zambeze_mesh.pilots import grant
from zambeze_mesh.security.authz import Caller
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import names as namestore
from zambeze_mesh.v1 import membership_pb2, membership_pb2_grpc

C = grpc.StatusCode


def no_zeroconf(i: int) -> dict[str, object]:
    return {"zeroconf": False}


async def obtain(agent: Agent, prefix: str) -> str:
    """What ``zmesh pilot submit`` does for its token, on ``agent``'s home."""

    def run() -> str:
        store = open_store(agent.home)
        try:
            return grant.obtain(store, prefix, 600, "test job")
        finally:
            store.close()

    return await asyncio.to_thread(run)


async def join(root: Path, seed: Agent, token: str, name: str) -> None:
    await join_mesh(
        Home(root / name), seed.address, token, name=name, listen=f"127.0.0.1:{free_port_pair()}"
    )


def issued_by_ca(ca_holder: Agent, name: str) -> bool:
    store = open_store(ca_holder.home)
    try:
        return namestore.get_issued(store, name) is not None
    finally:
        store.close()


async def test_non_ca_agent_gets_a_single_use_token_for_its_pilots(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2, configure=no_zeroconf) as (a0, a1):
        store = open_store(a1.home)
        try:
            assert idstore.load_identity(store).ca_key_pem is None
            assert [n for n, _ in idstore.ca_holders(store)] == ["agent-0"]
        finally:
            store.close()
        token = await obtain(a1, "agent-1-pilot-")
        # The pilot joins through its submitter, which forwards to the CA holder.
        await join(tmp_path, a1, token, "agent-1-pilot-7")
        assert issued_by_ca(a0, "agent-1-pilot-7")
        assert (tmp_path / "agent-1-pilot-7" / "config.toml").exists()
        with pytest.raises(Unauthenticated, match="already used"):
            await join(tmp_path, a1, token, "agent-1-pilot-8")
        # The scope is agent-1's: no other agent's pilot name, no plain name.
        other = await obtain(a1, "agent-1-pilot-")
        with pytest.raises(Unauthenticated, match="only admits names agent-1-pilot-"):
            await join(tmp_path, a1, other, "agent-0-pilot-9")
        with pytest.raises(Unauthenticated, match="only admits names agent-1-pilot-"):
            await join(tmp_path, a0, other, "intruder")
        await join(tmp_path, a0, other, "agent-1-pilot-10")  # still unspent


async def test_scope_is_the_callers_certificate_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with mesh(tmp_path, 2, configure=no_zeroconf) as (a0, a1):
        with pytest.raises(InvalidInput, match="agent-1-pilot-"):
            await obtain(a1, "agent-0-pilot-")
        # Whatever the request says, the CA holder scopes the token to the caller.
        async with grpc.aio.secure_channel(a0.address, home_credentials(a1.home)) as ch:
            stub = membership_pb2_grpc.MembershipStub(ch)
            resp = await stub.PilotToken(
                membership_pb2.PilotTokenRequest(ttl_s=60, job_hint="agent-0-pilot-1"), timeout=5
            )
            assert resp.name_prefix == "agent-1-pilot-" and resp.token.startswith("ZMESH1-")
            assert resp.expires_unix_ms > 0
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.PilotToken(
                    membership_pb2.PilotTokenRequest(ttl_s=grant.MAX_TTL_S + 1), timeout=5
                )
            assert err.value.code() == C.INVALID_ARGUMENT
        with pytest.raises(Unauthenticated, match="only admits names agent-1-pilot-"):
            await join(tmp_path, a1, resp.token, "agent-0-pilot-1")
        # A CA holder whose key is locked admits no pilot: it grants no token either.
        assert a0.membership_servicer is not None
        a0.membership_servicer.ca_locked = True
        try:
            with pytest.raises(FailedPrecondition, match="CA key is locked"):
                await obtain(a1, "agent-1-pilot-")
        finally:
            a0.membership_servicer.ca_locked = False
        # Unspent tokens per agent are bounded (the first one above is still unspent).
        monkeypatch.setattr(grant, "MAX_OUTSTANDING", 2)
        await obtain(a1, "agent-1-pilot-")
        with pytest.raises(ResourceExhausted, match="2 unspent pilot tokens"):
            await obtain(a1, "agent-1-pilot-")
        # agent-1 holds no CA key: it grants nothing itself.
        async with grpc.aio.secure_channel(a1.address, home_credentials(a0.home)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await membership_pb2_grpc.MembershipStub(ch).PilotToken(
                    membership_pb2.PilotTokenRequest(), timeout=5
                )
            assert err.value.code() == C.FAILED_PRECONDITION
            assert "does not hold the mesh CA key" in (err.value.details() or "")


async def test_clients_and_anonymous_callers_get_no_pilot_token(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1, configure=no_zeroconf) as (a0,):
        store = open_store(a0.home)
        try:
            bundle = issue_client(store, "agent-1", tmp_path / "client")
        finally:
            store.close()
        creds = channel_credentials(
            bundle.key.read_bytes(), bundle.cert.read_bytes(), bundle.ca.read_bytes()
        )
        req = membership_pb2.PilotTokenRequest(ttl_s=60)
        store = open_store(a0.home)
        try:
            tokens_before = store.read("SELECT COUNT(*) AS n FROM tokens")[0]["n"]
        finally:
            store.close()
        async with grpc.aio.secure_channel(a0.address, creds) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await membership_pb2_grpc.MembershipStub(ch).PilotToken(req, timeout=5)
            assert err.value.code() == C.PERMISSION_DENIED
        async with grpc.aio.insecure_channel(a0.admission_address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await membership_pb2_grpc.MembershipStub(ch).PilotToken(req, timeout=5)
            assert err.value.code() == C.UNAUTHENTICATED
        async with grpc.aio.insecure_channel(f"unix:{a0.home.socket}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await membership_pb2_grpc.MembershipStub(ch).PilotToken(req, timeout=5)
            assert err.value.code() == C.PERMISSION_DENIED
        # None of these minted a token.
        store = open_store(a0.home)
        try:
            assert store.read("SELECT COUNT(*) AS n FROM tokens")[0]["n"] == tokens_before
        finally:
            store.close()

        # The servicer refuses non-agent callers even behind a permissive policy.
        with pytest.raises(NotPermitted):
            grant.issue(open_store(a0.home), Caller.local(), req)


def submits_on_1(i: int) -> dict[str, object]:
    if i == 0:
        return {"zeroconf": False}
    return {"slots": 1, "scheduler": "slurm", "walltime": "5", "zeroconf": False}


@pytest.mark.usefixtures("slurm_conf")
async def test_pilot_submitted_on_a_non_ca_agent_joins_and_serves(tmp_path: Path) -> None:
    pytest.importorskip("psij")
    from tests.integration.test_campaigns_e2e import by_name, submit_and_watch
    from tests.integration.test_pilots_slurm import cli, member_status, short, squeue_ids, submit
    from zambeze_mesh.v1 import campaigns_pb2_grpc
    from zambeze_mesh.v1 import common_pb2 as S

    async with mesh(tmp_path, 2, configure=submits_on_1) as (a0, a1):
        row = await submit(a1, "--walltime", "10", "--slots", "2")
        assert row.name == f"agent-1-pilot-{row.job_id}"
        assert row.job_id in squeue_ids()
        # The token came from the CA holder, scoped to agent-1's pilots.
        store = open_store(a0.home)
        try:
            [granted] = store.read("SELECT name_prefix FROM pilot_tokens")
            assert granted["name_prefix"] == "agent-1-pilot-"
        finally:
            store.close()
        for agent in (a1, a0):
            await wait_until(
                lambda agent=agent: member_status(agent, row.name) == "alive", 90, "pilot alive"
            )
        store = open_store(a0.home)
        try:
            [spent] = store.read("SELECT used FROM pilot_tokens")
            assert spent["used"] == 1
        finally:
            store.close()
        acts = [short(f"p{i}", row.name, f"echo {i}") for i in range(20)]
        async with grpc.aio.insecure_channel(f"unix:{a1.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            async with asyncio.timeout(120):
                status, _ = await submit_and_watch(stub, acts)
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status.message
        done = by_name(status)
        assert {a.agent for a in done.values()} == {row.name}
        assert done["p3"].detail["stdout_tail"].strip() == "3"
        assert await cli("--home", str(a1.home.root), "pilot", "cancel", row.name) == 0
        await wait_until(lambda: member_status(a1, row.name) == "left", 30, "pilot left")
        await wait_until(lambda: row.job_id not in squeue_ids(), 30, "job ended")
