"""Signed agent records and every forgery the verifier must catch."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from zambeze_mesh.security import (
    CertCache,
    ForgedRecord,
    Identity,
    MeshCA,
    sign_record,
    verify_record,
)
from zambeze_mesh.v1 import common_pb2


def _record(
    name: str = "a1", mesh: str = "alpha", address: str = "127.0.0.1:7001"
) -> common_pb2.AgentRecord:
    return common_pb2.AgentRecord(
        name=name,
        mesh=mesh,
        address=address,
        incarnation=3,
        capabilities=common_pb2.Capabilities(
            plugins=["shell", "python"], slots=4, free_slots=2, labels={"facility": "olcf"}
        ),
        status=common_pb2.MEMBER_STATUS_ALIVE,
        issued_unix_ms=1_700_000_000_000,
    )


@pytest.fixture(scope="module")
def agent(ca: MeshCA) -> tuple[object, bytes]:
    return ca.issue(Identity.agent("alpha", "a1"), ["127.0.0.1"])


def test_sign_and_verify(ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    record = _record()
    signed = sign_record(key, der, record)
    assert signed.record == record.SerializeToString(deterministic=True)
    got = verify_record(signed, ca.cert, mesh="alpha", cache=CertCache())
    assert got == record
    # verify again through the cached certificate
    assert verify_record(signed, ca.cert, mesh="alpha") == record
    assert verify_record(signed, ca.cert, mesh="alpha") == record


def test_record_claims_another_name(ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    signed = sign_record(key, der, _record(name="a2"))
    with pytest.raises(ForgedRecord, match="names agent 'a2' but is signed by agent 'a1'"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_tampered_bytes(ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    signed = sign_record(key, der, _record())
    raw = bytearray(signed.record)
    raw[-1] ^= 0x01
    signed.record = bytes(raw)
    with pytest.raises(ForgedRecord, match="signature"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_changed_address_after_signing(ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    signed = sign_record(key, der, _record())
    changed = _record(address="127.0.0.1:6666")
    signed.record = changed.SerializeToString(deterministic=True)
    with pytest.raises(ForgedRecord, match="signature"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_garbage_signature(ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    signed = sign_record(key, der, _record())
    signed.signature = b"not a signature"
    with pytest.raises(ForgedRecord, match="signature"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_swapped_certificate(ca: MeshCA, agent: tuple) -> None:
    """A record signed by a1's key but carrying a2's certificate."""
    key, _ = agent
    _, der2 = ca.issue(Identity.agent("alpha", "a2"))
    signed = sign_record(key, der2, _record(name="a2"))
    with pytest.raises(ForgedRecord, match="signature"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_cert_from_another_ca(ca: MeshCA, rogue_ca: MeshCA) -> None:
    key, der = rogue_ca.issue(Identity.agent("alpha", "a1"))
    signed = sign_record(key, der, _record())
    with pytest.raises(ForgedRecord, match=r"certificate rejected.*not issued"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_client_cert_signing_agent_record(ca: MeshCA) -> None:
    key, der = ca.issue(Identity.client("alpha", "a1"))
    signed = sign_record(key, der, _record())
    with pytest.raises(ForgedRecord, match="not an agent"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_other_mesh(ca: MeshCA, other_ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    # the record says another mesh
    signed = sign_record(key, der, _record(mesh="beta"))
    with pytest.raises(ForgedRecord, match="mesh 'beta'"):
        verify_record(signed, ca.cert, mesh="alpha")
    # a genuine record of mesh beta presented to mesh alpha
    key_b, der_b = other_ca.issue(Identity.agent("beta", "a1"))
    signed = sign_record(key_b, der_b, _record(mesh="beta"))
    with pytest.raises(ForgedRecord):
        verify_record(signed, ca.cert, mesh="alpha")
    # verifying with the right CA but the wrong expected mesh
    with pytest.raises(ForgedRecord, match="mesh"):
        verify_record(signed, other_ca.cert, mesh="alpha")


def test_missing_or_garbage_cert(ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    signed = sign_record(key, der, _record())
    signed.cert_der = b""
    with pytest.raises(ForgedRecord, match="no usable certificate"):
        verify_record(signed, ca.cert, mesh="alpha")
    signed.cert_der = b"\x30\x00"
    with pytest.raises(ForgedRecord, match="certificate rejected"):
        verify_record(signed, ca.cert, mesh="alpha")


def test_expired_cert_rejected_even_when_cached(ca: MeshCA) -> None:
    cache = CertCache()
    key, der = ca.issue(Identity.agent("alpha", "a1"), validity_days=1)
    signed = sign_record(key, der, _record())
    verify_record(signed, ca.cert, mesh="alpha", cache=cache)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(ForgedRecord, match="expired"):
        verify_record(signed, ca.cert, mesh="alpha", cache=cache, now=later)


def test_cache_is_bounded(ca: MeshCA) -> None:
    cache = CertCache(capacity=2)
    for name in ("a1", "a2", "a3"):
        _, der = ca.issue(Identity.agent("alpha", name))
        cache.verify(der, ca.cert, mesh="alpha")
    assert len(cache) == 2


def test_verify_is_fast_with_cache(ca: MeshCA, agent: tuple) -> None:
    key, der = agent
    signed = sign_record(key, der, _record())
    cache = CertCache()
    verify_record(signed, ca.cert, mesh="alpha", cache=cache)
    start = time.perf_counter()
    for _ in range(200):
        verify_record(signed, ca.cert, mesh="alpha", cache=cache)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 0.002, per_call  # one ECDSA verify, no certificate parsing
