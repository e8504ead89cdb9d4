"""A real agent's TCP port: mTLS required, per-RPC authorization, message limits,
health and reflection."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.helpers.inproc import mesh
from zambeze_mesh.agent.bootstrap import issue_client, open_store
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.keys import der_to_pem, key_to_pem
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, membership_pb2, membership_pb2_grpc


def _client_creds(home: Path, out: Path) -> grpc.ChannelCredentials:
    store = open_store_home(home)
    try:
        b = issue_client(store, "tester", out)
    finally:
        store.close()
    return grpc.ssl_channel_credentials(b.ca.read_bytes(), b.key.read_bytes(), b.cert.read_bytes())


def open_store_home(home: Path):  # type: ignore[no-untyped-def]
    from zambeze_mesh.settings.home import Home

    return open_store(Home(home))


async def test_client_cert_rules(tmp_path: Path) -> None:
    async with mesh(tmp_path / "m", 1) as (agent,):
        creds = _client_creds(agent.home.root, tmp_path / "client")
        async with grpc.aio.secure_channel(agent.address, creds) as ch:
            members = await campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                campaigns_pb2.ListMembersRequest(), timeout=10
            )
            assert [m.name for m in members.members] == ["agent-0"]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await membership_pb2_grpc.MembershipStub(ch).Ping(
                    membership_pb2.PingRequest(), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # over the message limit (4 MiB by default): refused, agent keeps serving
            big = campaigns_pb2.SubmitRequest(name="x" * (5 * 1024 * 1024))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await campaigns_pb2_grpc.CampaignsStub(ch).Submit(big, timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            again = await campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                campaigns_pb2.ListMembersRequest(), timeout=10
            )
            assert again.self_name == "agent-0"


@pytest.mark.parametrize("who", ["no-cert", "other-ca"])
async def test_tls_handshake_refused(tmp_path: Path, who: str) -> None:
    async with mesh(tmp_path / "m", 1) as (agent,):
        ca_pem = agent.ca.cert_pem if agent.ca else b""
        if who == "no-cert":
            creds = grpc.ssl_channel_credentials(ca_pem)
        else:
            other = MeshCA.create("test")  # same mesh name, different CA
            key, cert = other.issue(Identity.client("test", "mallory"))
            creds = channel_credentials(key_to_pem(key), der_to_pem(cert), ca_pem)
        async with grpc.aio.secure_channel(agent.address, creds) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                    campaigns_pb2.ListMembersRequest(), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_admission_port_serves_only_join(tmp_path: Path) -> None:
    async with mesh(tmp_path / "m", 1) as (agent,):
        async with grpc.aio.insecure_channel(agent.admission_address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                    campaigns_pb2.ListMembersRequest(), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert agent.ca is not None
            pin = await membership_pb2_grpc.MembershipStub(ch).Join(
                membership_pb2.JoinRequest(ca_digest=agent.ca.digest), timeout=5
            )
            assert pin.ca_cert_der == agent.ca.cert_der


async def test_health_and_reflection_on_unix_socket(tmp_path: Path) -> None:
    async with mesh(tmp_path / "m", 1) as (agent,):
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="zambeze_mesh.v1.Campaigns"), timeout=5
            )
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            names = set()
            async for r in stub.ServerReflectionInfo(iter([req])):
                names = {s.name for s in r.list_services_response.service}
            assert {"zambeze_mesh.v1.Campaigns", "zambeze_mesh.v1.Data"} <= names
        assert oct(agent.home.socket.stat().st_mode & 0o777) == "0o600"


def test_generated_code_in_sync() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [str(root / "scripts" / "gen_proto"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
