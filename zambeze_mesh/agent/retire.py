"""Retiring a member's name on the CA holder (``zmesh members remove NAME``).

The operator holding the CA key revokes every certificate the name is known to hold
(the ones this CA holder issued, and the one in the member's last signed record),
frees the name for another key, and hands the CA-signed revocation to the running
agent, which enforces it at once and spreads it to every member.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.errors import InvalidInput, NotFound, NotPermitted, Unavailable
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import validate_name
from zambeze_mesh.security.keyfiles import unlock_ca_key
from zambeze_mesh.security.keys import cert_from_der
from zambeze_mesh.security.revocation import der_digest, sign_revocation
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import members as memstore
from zambeze_mesh.store import names as namestore
from zambeze_mesh.v1 import common_pb2, membership_pb2, membership_pb2_grpc

RPC_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Retired:
    """What ``zmesh members remove`` did."""

    name: str
    certificates: int
    delivered: bool  # the running agent took the revocation (else: at its next start)


def retire_member(home: Home, name: str, ca_passphrase: bytes | None = None) -> Retired:
    """Revoke ``name``'s certificates and free the name (on the CA holder's home;
    ``ca_passphrase`` when the CA key is encrypted)."""
    validate_name(name, "agent name")
    store = open_store(home)
    try:
        ident = idstore.load_identity(store)
        if ident.ca_key_pem is None:
            raise NotPermitted(
                f"agent {ident.name} does not hold the mesh CA key: remove members on the CA holder"
            )
        if name == ident.name:
            raise InvalidInput(f"{name!r} is this CA holder itself and cannot be removed")
        digests: set[str] = set()
        issued = namestore.get_issued(store, name)
        if issued is not None:
            digests.update(issued.certs)
        for row in memstore.load_members(store):
            if row.name == name and row.signed_record:
                signed = common_pb2.SignedRecord.FromString(row.signed_record)
                digests.add(der_digest(signed.cert_der))
        if not digests:
            raise NotFound(f"no member named {name!r} is known to this CA holder")
        ca = MeshCA(
            cert_from_der(ident.ca_cert_der), unlock_ca_key(ident.ca_key_pem, ca_passphrase)
        )
        revocation = sign_revocation(ca, name, digests)
        namestore.save_revocation(store, revocation)
        namestore.retire(store, name)
    finally:
        store.close()
    delivered = home.socket.exists() and asyncio.run(_deliver(home, revocation))
    return Retired(name, len(digests), delivered)


async def _deliver(home: Home, revocation: membership_pb2.SignedRevocation) -> bool:
    async with grpc.aio.insecure_channel(f"unix:{home.socket}") as ch:
        req = membership_pb2.RevokeRequest(revocations=[revocation])
        try:
            await membership_pb2_grpc.MembershipStub(ch).Revoke(req, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            if isinstance(err, Unavailable):
                return False
            raise err from None
    return True
