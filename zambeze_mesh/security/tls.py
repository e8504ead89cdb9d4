"""gRPC TLS credentials for mTLS between agents and clients, and reading the peer's identity."""

from __future__ import annotations

from typing import Any, Protocol

import grpc
from cryptography import x509

from zambeze_mesh.errors import InvalidInput, Unauthenticated
from zambeze_mesh.security.identity import Identity, identity_from_cert

#: auth_context key under which gRPC puts the peer certificate (PEM).
PEER_CERT_KEY = "x509_pem_cert"


class PeerContext(Protocol):
    """The part of a gRPC (sync or aio) ServicerContext used here."""

    def peer(self) -> str: ...  # pragma: no cover - protocol

    def auth_context(self) -> Any: ...  # pragma: no cover - protocol


def server_credentials(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate issued by the mesh CA."""
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )


def channel_credentials(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.ChannelCredentials:
    """Channel credentials presenting our certificate and trusting only the mesh CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def target_name_options(server_name: str | None) -> list[tuple[str, str]]:
    """Channel options to check the server certificate against ``server_name``.

    Use when the address dialled is not among the SANs of the peer's certificate, e.g.
    dialling an agent through a tunnel; empty when ``server_name`` is None.
    """
    return [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]


def peer_cert(context: PeerContext) -> x509.Certificate | None:
    """The peer's TLS certificate, or None for a plaintext or Unix-socket peer."""
    pem = peer_cert_pem(context)
    if pem is None:
        return None
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise Unauthenticated(f"peer certificate does not parse: {exc}") from None


def peer_cert_pem(context: PeerContext) -> bytes | None:
    """The PEM bytes of the peer certificate gRPC recorded, or None."""
    try:
        auth = context.auth_context()
    except Exception:
        return None
    values = list(auth.get(PEER_CERT_KEY, ()) or ())
    if not values:
        return None
    first = values[0]
    return first.encode() if isinstance(first, str) else bytes(first)


def peer_identity(context: PeerContext) -> Identity | None:
    """The SPIFFE identity of the TLS peer, or None when the peer has no certificate.

    Only reads the identity: the handshake checked the chain to the CA already; use
    :func:`~zambeze_mesh.security.ca.verify_cert` when the mesh must be checked too.
    """
    cert = peer_cert(context)
    if cert is None:
        return None
    try:
        return identity_from_cert(cert)
    except InvalidInput as exc:  # pragma: no cover - identity_from_cert raises Unauthenticated
        raise Unauthenticated(str(exc)) from None


def is_local_peer(context: PeerContext) -> bool:
    """True when the call came over a Unix socket (a local client)."""
    try:
        return context.peer().startswith("unix:")
    except Exception:
        return False
