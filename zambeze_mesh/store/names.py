"""Names issued by the CA holder, and the revocations an agent knows (in the meta table).

The CA holder records, for every name it signs a certificate for, the digest of the
key it was bound to and the digests of the certificates issued; a name stays bound to
its key until it is retired (``zmesh members remove``) or its holder left the mesh.
Every agent keeps the CA-signed revocations it has learned, so they survive restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.security.keys import cert_from_der
from zambeze_mesh.store import kv
from zambeze_mesh.store.db import Store
from zambeze_mesh.v1 import membership_pb2

_ISSUED = "issued/"
_REVOKED = "revocation/"


def _spki_digest(key: PublicKeyTypes) -> str:
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def key_digest_of_cert(cert_der: bytes) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo (the key a name is bound to)."""
    return _spki_digest(cert_from_der(cert_der).public_key())


def csr_key_digest(csr_der: bytes) -> str:
    """:func:`key_digest_of_cert` for the key of a CSR; InvalidInput if it does not parse."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError:
        raise InvalidInput("join request CSR does not parse") from None
    return _spki_digest(csr.public_key())


@dataclass
class IssuedName:
    """A name the CA holder signed certificates for."""

    name: str
    key_sha256: str
    certs: list[str] = field(default_factory=list)
    retired: bool = False


def get_issued(store: Store, name: str) -> IssuedName | None:
    """What the CA holder issued under ``name``, if anything."""
    raw = kv.get(store, _ISSUED + name)
    if raw is None:
        return None
    doc = json.loads(raw)
    return IssuedName(name, str(doc["key"]), list(doc.get("certs", [])), bool(doc["retired"]))


def _put(store: Store, entry: IssuedName) -> None:
    doc = {"key": entry.key_sha256, "certs": entry.certs, "retired": entry.retired}
    kv.put(store, _ISSUED + entry.name, json.dumps(doc))


def record_issue(store: Store, name: str, cert_der: bytes) -> None:
    """Bind ``name`` to the key of ``cert_der`` (a new binding replaces a retired one)."""
    key = key_digest_of_cert(cert_der)
    digest = hashlib.sha256(cert_der).hexdigest()
    entry = get_issued(store, name)
    if entry is None or entry.retired or entry.key_sha256 != key:
        entry = IssuedName(name, key)
    entry.certs = [*entry.certs, digest][-32:]
    _put(store, entry)


def retire(store: Store, name: str) -> IssuedName | None:
    """Mark ``name`` retired (free for another key); returns the entry it had."""
    entry = get_issued(store, name)
    if entry is not None:
        entry.retired = True
        _put(store, entry)
    return entry


def save_revocation(store: Store, signed: membership_pb2.SignedRevocation) -> None:
    """Persist a verified revocation (idempotent)."""
    data = signed.SerializeToString(deterministic=True)
    key = _REVOKED + hashlib.sha256(signed.revocation).hexdigest()
    kv.put(store, key, base64.b64encode(data).decode("ascii"))


def load_revocations(store: Store) -> list[membership_pb2.SignedRevocation]:
    """Every revocation this store keeps (unverified: check them before use)."""
    rows = store.read("SELECT value FROM meta WHERE key LIKE ?", (_REVOKED + "%",))
    out = []
    for r in rows:
        out.append(membership_pb2.SignedRevocation.FromString(base64.b64decode(r["value"])))
    return out
