"""Signed agent records: only the agent a record names can issue it.

An agent serializes its ``AgentRecord`` deterministically and signs the bytes with its
own key (ECDSA P-256 / SHA-256); receivers check the attached certificate against the
mesh CA, that it is an *agent* certificate for the very name the record carries, and the
signature over the exact bytes, before believing any address or capability in it.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from zambeze_mesh.errors import NotPermitted, Unauthenticated
from zambeze_mesh.security.certcache import CertCache, default_cache
from zambeze_mesh.security.keys import PrivateKey
from zambeze_mesh.v1 import common_pb2

MAX_RECORD_BYTES = 64 * 1024
MAX_CERT_BYTES = 16 * 1024
_ECDSA = ec.ECDSA(hashes.SHA256())


class ForgedRecord(NotPermitted):
    """A signed record that must not be believed; the message says why."""


def sign_record(
    key: PrivateKey, cert_der: bytes, record: common_pb2.AgentRecord
) -> common_pb2.SignedRecord:
    """Serialize ``record`` deterministically and sign it with ``key``."""
    data = record.SerializeToString(deterministic=True)
    return common_pb2.SignedRecord(record=data, signature=key.sign(data, _ECDSA), cert_der=cert_der)


def verify_record(
    signed: common_pb2.SignedRecord,
    ca_cert: x509.Certificate,
    *,
    mesh: str,
    now: dt.datetime | None = None,
    cache: CertCache | None = None,
) -> common_pb2.AgentRecord:
    """Return the record inside ``signed`` if it is genuine; raise ForgedRecord otherwise.

    Checks that the certificate chains to the mesh CA and is valid now, that it is an
    agent certificate of ``mesh`` naming the same agent as the record, that the record is
    for ``mesh``, and the signature over the exact record bytes. Verified certificates
    are cached by DER digest.
    """
    if len(signed.record) > MAX_RECORD_BYTES:
        raise ForgedRecord(f"record is too large ({len(signed.record)} bytes)")
    if not signed.cert_der or len(signed.cert_der) > MAX_CERT_BYTES:
        raise ForgedRecord("record carries no usable certificate")
    try:
        verified = (cache or default_cache).verify(signed.cert_der, ca_cert, mesh=mesh, now=now)
    except Unauthenticated as exc:
        raise ForgedRecord(f"record certificate rejected: {exc}") from None
    identity = verified.identity
    if identity.role != "agent":
        raise ForgedRecord(f"{identity} is not an agent and may not sign agent records")
    try:
        verified.public_key.verify(signed.signature, signed.record, _ECDSA)
    except InvalidSignature:
        raise ForgedRecord(f"signature by {identity.name!r} does not match the record") from None
    record = common_pb2.AgentRecord()
    try:
        record.ParseFromString(signed.record)
    except DecodeError:
        raise ForgedRecord("record bytes do not parse as an AgentRecord") from None
    if record.name != identity.name:
        raise ForgedRecord(
            f"record names agent {record.name!r} but is signed by agent {identity.name!r}"
        )
    if record.mesh != mesh:
        raise ForgedRecord(f"record is for mesh {record.mesh!r}, not {mesh!r}")
    return record
