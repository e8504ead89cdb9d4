"""Certificate revocations: signed by the mesh CA, checked by every agent.

A :class:`~zambeze_mesh.v1.membership_pb2.Revocation` names a retired identity and the
SHA-256 digests of the certificates it held. It is signed by the CA key, so any agent
can check it and pass it on: whoever delivers it, only the operator holding the CA key
can make one. :class:`RevocationSet` is the in-memory view every agent consults when it
authenticates a TLS peer and when it verifies a gossiped record.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError

from zambeze_mesh.errors import InvalidInput, NotPermitted
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import validate_name
from zambeze_mesh.v1 import membership_pb2

MAX_REVOCATION_BYTES = 64 * 1024
MAX_CERTS_PER_REVOCATION = 256
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def der_digest(cert_der: bytes) -> str:
    """Hex SHA-256 of a certificate's DER (what revocations list)."""
    return hashlib.sha256(cert_der).hexdigest()


def cert_digest_of(cert: x509.Certificate) -> str:
    """:func:`der_digest` of a parsed certificate."""
    return der_digest(cert.public_bytes(Encoding.DER))


def sign_revocation(
    ca: MeshCA, name: str, cert_digests: Iterable[str], *, now_ms: int | None = None
) -> membership_pb2.SignedRevocation:
    """A revocation of ``cert_digests`` (certificates of ``name``), signed by the CA key."""
    validate_name(name, "name")
    digests = sorted(set(cert_digests))
    if not digests:
        raise InvalidInput(f"no certificate of {name!r} is known: nothing to revoke")
    if len(digests) > MAX_CERTS_PER_REVOCATION:
        raise InvalidInput(f"too many certificates in one revocation ({len(digests)})")
    for d in digests:
        if not _DIGEST_RE.fullmatch(d):
            raise InvalidInput("certificate digests must be 64 lowercase hex characters")
    rev = membership_pb2.Revocation(
        mesh=ca.mesh,
        name=name,
        cert_sha256=digests,
        revoked_unix_ms=int(time.time() * 1000) if now_ms is None else now_ms,
    )
    data = rev.SerializeToString(deterministic=True)
    return membership_pb2.SignedRevocation(revocation=data, signature=ca.sign_data(data))


def verify_revocation(
    signed: membership_pb2.SignedRevocation, ca_cert: x509.Certificate, *, mesh: str
) -> membership_pb2.Revocation:
    """The revocation inside ``signed`` if the mesh CA signed it; NotPermitted otherwise."""
    if len(signed.revocation) > MAX_REVOCATION_BYTES or len(signed.signature) > 256:
        raise NotPermitted("revocation is too large")
    pub = ca_cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):  # pragma: no cover - CA is EC
        raise NotPermitted("the mesh CA key is not an EC key")
    try:
        pub.verify(signed.signature, signed.revocation, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise NotPermitted("revocation is not signed by the mesh CA") from None
    rev = membership_pb2.Revocation()
    try:
        rev.ParseFromString(signed.revocation)
    except DecodeError:
        raise NotPermitted("revocation bytes do not parse") from None
    if rev.mesh != mesh:
        raise NotPermitted(f"revocation is for mesh {rev.mesh!r}, not {mesh!r}")
    if not all(_DIGEST_RE.fullmatch(d) for d in rev.cert_sha256):
        raise NotPermitted("revocation lists a malformed certificate digest")
    return rev


class RevocationSet:
    """The certificate digests this agent refuses (thread-safe; O(1) lookups)."""

    def __init__(self) -> None:
        self._digests: set[str] = set()
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, rev: membership_pb2.Revocation) -> bool:
        """Add a verified revocation; True if it revoked anything new."""
        with self._lock:
            new = [d for d in rev.cert_sha256 if d not in self._digests]
            self._digests.update(new)
            for d in new:
                self._names[d] = rev.name
            return bool(new)

    def is_revoked(self, digest: str) -> bool:
        """True if the certificate with this DER digest is revoked."""
        return digest in self._digests

    def cert_revoked(self, cert: x509.Certificate) -> bool:
        """True if ``cert`` is revoked (free when nothing is revoked)."""
        return bool(self._digests) and cert_digest_of(cert) in self._digests

    def name_of(self, digest: str) -> str | None:
        """The retired name a revoked digest belonged to."""
        return self._names.get(digest)
