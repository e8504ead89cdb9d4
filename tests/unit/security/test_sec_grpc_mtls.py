"""One real gRPC server on 127.0.0.1: mTLS, the authorization interceptor, anonymous port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from zambeze_mesh.security import (
    AuthorizationInterceptor,
    Identity,
    MeshCA,
    cert_to_pem,
    channel_credentials,
    current_caller,
    der_to_pem,
    key_to_pem,
    peer_identity,
    server_credentials,
)
from zambeze_mesh.v1 import (
    campaigns_pb2,
    campaigns_pb2_grpc,
    membership_pb2,
    membership_pb2_grpc,
)

TIMEOUT = 5.0


class Campaigns(campaigns_pb2_grpc.CampaignsServicer):
    async def ListMembers(
        self, request: campaigns_pb2.ListMembersRequest, context: Any
    ) -> campaigns_pb2.ListMembersResponse:
        caller = current_caller()
        assert caller is not None
        ident = peer_identity(context)
        return campaigns_pb2.ListMembersResponse(
            self_name=f"{caller.kind}:{caller.name}", mesh=ident.mesh if ident else ""
        )


class Membership(membership_pb2_grpc.MembershipServicer):
    async def Ping(self, request: membership_pb2.PingRequest, context: Any) -> membership_pb2.Ack:
        caller = current_caller()
        assert caller is not None and caller.kind == "agent"
        return membership_pb2.Ack(seq=request.seq, ok=True)


@dataclass
class Creds:
    key_pem: bytes
    cert_pem: bytes


def _creds(ca: MeshCA, identity: Identity) -> Creds:
    key, der = ca.issue(identity, ["127.0.0.1"])
    return Creds(key_to_pem(key), der_to_pem(der))


@dataclass
class Server:
    secure: str
    insecure: str
    ca_pem: bytes


@pytest.fixture()
async def server(ca: MeshCA) -> AsyncIterator[Server]:
    me = _creds(ca, Identity.agent("alpha", "server"))
    srv = grpc.aio.server(interceptors=[AuthorizationInterceptor("alpha", ca.cert)])
    campaigns_pb2_grpc.add_CampaignsServicer_to_server(Campaigns(), srv)  # type: ignore[abstract]
    membership_pb2_grpc.add_MembershipServicer_to_server(Membership(), srv)  # type: ignore[abstract]
    port = srv.add_secure_port(
        "127.0.0.1:0", server_credentials(me.key_pem, me.cert_pem, ca.cert_pem)
    )
    plain = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield Server(f"127.0.0.1:{port}", f"127.0.0.1:{plain}", ca.cert_pem)
    finally:
        await srv.stop(None)


def _secure(server: Server, creds: Creds | None, ca_pem: bytes | None = None) -> grpc.aio.Channel:
    ca = ca_pem or server.ca_pem
    if creds is None:
        cc = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        cc = channel_credentials(creds.key_pem, creds.cert_pem, ca)
    return grpc.aio.secure_channel(server.secure, cc)


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def test_mtls_and_authorization(ca: MeshCA, rogue_ca: MeshCA, server: Server) -> None:
    client = _creds(ca, Identity.client("alpha", "alice"))
    agent = _creds(ca, Identity.agent("alpha", "a2"))

    async with _secure(server, client) as ch:
        camp = campaigns_pb2_grpc.CampaignsStub(ch)
        resp = await camp.ListMembers(campaigns_pb2.ListMembersRequest(), timeout=TIMEOUT)
        assert resp.self_name == "client:alice" and resp.mesh == "alpha"
        mem = membership_pb2_grpc.MembershipStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await mem.Ping(membership_pb2.PingRequest(seq=1), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "client identity spiffe://alpha/client/alice may not call" in (
            info.value.details() or ""
        )

    async with _secure(server, agent) as ch:
        ack = await membership_pb2_grpc.MembershipStub(ch).Ping(
            membership_pb2.PingRequest(seq=7), timeout=TIMEOUT
        )
        assert ack.ok and ack.seq == 7
        resp = await campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
            campaigns_pb2.ListMembersRequest(), timeout=TIMEOUT
        )
        assert resp.self_name == "agent:a2"
        # an unimplemented method passes authorization and reaches the base servicer
        code = await _code(
            membership_pb2_grpc.MembershipStub(ch).Gossip(
                membership_pb2.GossipRequest(), timeout=TIMEOUT
            )
        )
        assert code == grpc.StatusCode.UNIMPLEMENTED

    # no client certificate: the TLS handshake fails
    async with _secure(server, None) as ch:
        code = await _code(
            campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                campaigns_pb2.ListMembersRequest(), timeout=TIMEOUT
            )
        )
        assert code == grpc.StatusCode.UNAVAILABLE

    # a certificate from another CA (same mesh name): the handshake fails too
    rogue = _creds(rogue_ca, Identity.agent("alpha", "a2"))
    async with _secure(server, rogue, ca_pem=server.ca_pem) as ch:
        code = await _code(
            membership_pb2_grpc.MembershipStub(ch).Ping(
                membership_pb2.PingRequest(seq=1), timeout=TIMEOUT
            )
        )
        assert code == grpc.StatusCode.UNAVAILABLE

    # anonymous callers on the plaintext port
    async with grpc.aio.insecure_channel(server.insecure) as ch:
        mem = membership_pb2_grpc.MembershipStub(ch)
        code = await _code(mem.Ping(membership_pb2.PingRequest(seq=1), timeout=TIMEOUT))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code = await _code(
            campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                campaigns_pb2.ListMembersRequest(), timeout=TIMEOUT
            )
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Join is open to anyone: it reaches the (unimplemented) servicer
        code = await _code(mem.Join(membership_pb2.JoinRequest(), timeout=TIMEOUT))
        assert code == grpc.StatusCode.UNIMPLEMENTED


async def test_server_cert_checked_by_client(ca: MeshCA, rogue_ca: MeshCA, server: Server) -> None:
    """A client trusting only another CA refuses the server."""
    client = _creds(rogue_ca, Identity.client("alpha", "alice"))
    async with _secure(server, client, ca_pem=cert_to_pem(rogue_ca.cert)) as ch:
        code = await _code(
            campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                campaigns_pb2.ListMembersRequest(), timeout=TIMEOUT
            )
        )
        assert code == grpc.StatusCode.UNAVAILABLE
