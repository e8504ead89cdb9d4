"""An LRU of verified member certificates, so gossip and RPCs don't re-verify the same DER."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from zambeze_mesh.errors import Unauthenticated
from zambeze_mesh.security.ca import check_validity, verify_parsed_cert
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.keys import cert_from_der, cert_from_pem

DEFAULT_CAPACITY = 4096


@dataclass(frozen=True, slots=True)
class VerifiedCert:
    """A certificate that chained to the mesh CA, with what callers need from it."""

    identity: Identity
    cert: x509.Certificate
    public_key: ec.EllipticCurvePublicKey


class CertCache:
    """Verify member certificates against a CA, remembering successes by DER digest.

    Entries are keyed by (CA fingerprint, mesh, certificate digest); the validity window is
    re-checked on every hit, so an expired certificate is refused even when cached.
    Failures are not cached. Thread-safe.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[bytes, str, bytes], VerifiedCert] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def verify(
        self,
        cert_der: bytes,
        ca_cert: x509.Certificate,
        *,
        mesh: str | None = None,
        now: dt.datetime | None = None,
    ) -> VerifiedCert:
        """Like :func:`~zambeze_mesh.security.ca.verify_cert`, cached; raises Unauthenticated."""
        return self._verify(cert_der, ca_cert, mesh=mesh, now=now, pem=False)

    def verify_pem(
        self,
        cert_pem: bytes,
        ca_cert: x509.Certificate,
        *,
        mesh: str | None = None,
        now: dt.datetime | None = None,
    ) -> VerifiedCert:
        """:meth:`verify` for a PEM certificate (as gRPC's auth_context gives it)."""
        return self._verify(cert_pem, ca_cert, mesh=mesh, now=now, pem=True)

    def _verify(
        self,
        data: bytes,
        ca_cert: x509.Certificate,
        *,
        mesh: str | None,
        now: dt.datetime | None,
        pem: bool,
    ) -> VerifiedCert:
        key = (
            ca_cert.fingerprint(hashes.SHA256()),
            mesh or "",
            hashlib.sha256(data).digest(),
        )
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
        if hit is not None:
            check_validity(hit.cert, now)
            return hit
        try:
            cert = cert_from_pem(data) if pem else cert_from_der(data)
        except Exception as exc:
            raise Unauthenticated(str(exc)) from None
        identity = verify_parsed_cert(cert, ca_cert, now=now, mesh=mesh)
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise Unauthenticated("certificate key is not an EC key")
        verified = VerifiedCert(identity, cert, public)
        with self._lock:
            self._entries[key] = verified
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return verified


#: The process-wide cache used by :mod:`records` and :mod:`authz` unless given another.
default_cache = CertCache()
