"""Join tokens and join proofs."""

from __future__ import annotations

import dataclasses

import pytest

from zambeze_mesh.errors import InvalidInput, Unauthenticated
from zambeze_mesh.security import (
    JoinFields,
    TokenRecord,
    join_proof,
    new_token,
    parse_token,
    token_id_of,
    verify_join_proof,
)
from zambeze_mesh.v1 import membership_pb2

DIGEST = "ab" * 32
NOW = 1_700_000_000_000


def test_new_token_roundtrip() -> None:
    token, record = new_token(DIGEST, now_ms=NOW, ttl_ms=60_000)
    assert token.startswith(f"ZMESH1-{DIGEST}-") and len(token) == 7 + 64 + 1 + 43
    parsed = parse_token(token)
    assert parsed.ca_digest == DIGEST
    assert parsed.secret == record.secret and len(parsed.secret) == 32
    assert parsed.token_id == record.token_id == token_id_of(record.secret)
    assert len(record.token_id) == 32
    assert record.created_ms == NOW and record.expires_ms == NOW + 60_000
    assert not record.revoked
    assert record.secret.hex() not in repr(record) and "secret=" not in repr(parsed)


def test_secret_with_dashes_parses() -> None:
    # 0xfb bytes encode to '-' and '_' in URL-safe base64: the secret contains '-'.
    secret = bytes([0xFB]) * 32
    token, record = new_token(DIGEST, now_ms=NOW, secret=secret)
    assert token.count("-") > 2
    assert parse_token(f"  {token}\n").secret == secret == record.secret


def test_tokens_are_random() -> None:
    assert new_token(DIGEST)[0] != new_token(DIGEST)[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a join token"),
        ("hello", "not a join token"),
        (f"ZMESH2-{DIGEST}-" + "A" * 43, "not a join token"),
        (f"ZMESH1-{DIGEST}", "not a join token"),
        ("ZMESH1-abc-" + "A" * 43, "64 hex"),
        (f"ZMESH1-{'zz' * 32}-" + "A" * 43, "64 hex"),
        (f"ZMESH1-{DIGEST}-" + "A" * 42, "43 characters"),
        (f"ZMESH1-{DIGEST}-" + "A" * 44, "43 characters"),
        (f"ZMESH1-{DIGEST}-" + "A" * 42 + "!", "43 characters"),
        (f"ZMESH1-{DIGEST}-" + "A" * 42 + "B", "not valid base64"),  # non-canonical tail
    ],
)
def test_parse_token_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_token(text)


def test_new_token_rejects_bad_digest() -> None:
    with pytest.raises(InvalidInput):
        new_token("ABC")


def test_record_dict_roundtrip() -> None:
    _, record = new_token(DIGEST, now_ms=NOW)
    assert TokenRecord.from_dict(record.to_dict()) == record
    assert TokenRecord.from_dict(record.revoke().to_dict()).revoked
    bad = record.to_dict() | {"token_id": "0" * 32}
    with pytest.raises(InvalidInput):
        TokenRecord.from_dict(bad)


def _fields(**over: object) -> JoinFields:
    base = JoinFields(
        ca_digest=DIGEST,
        name="a2",
        csr_der=b"\x30csr",
        advertise="127.0.0.1:7001",
        time_ms=NOW,
        admission_advertise="127.0.0.1:7002",
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def _proof(secret: bytes, f: JoinFields) -> bytes:
    return join_proof(
        secret,
        ca_digest=f.ca_digest,
        name=f.name,
        csr_der=f.csr_der,
        advertise=f.advertise,
        time_ms=f.time_ms,
        admission_advertise=f.admission_advertise,
    )


def test_proof_ok() -> None:
    _, record = new_token(DIGEST, now_ms=NOW)
    f = _fields()
    proof = _proof(record.secret, f)
    assert len(proof) == 32
    verify_join_proof(record, proof, f, NOW + 1000)


def test_proof_from_request_matches() -> None:
    _, record = new_token(DIGEST, now_ms=NOW)
    f = _fields()
    req = membership_pb2.JoinRequest(
        ca_digest=f.ca_digest,
        token_id=record.token_id,
        csr_der=f.csr_der,
        name=f.name,
        advertise=f.advertise,
        admission_advertise=f.admission_advertise,
        time_unix_ms=f.time_ms,
        proof=_proof(record.secret, f),
    )
    verify_join_proof(record, req.proof, JoinFields.from_request(req), NOW)


def test_proof_wrong_secret() -> None:
    _, record = new_token(DIGEST, now_ms=NOW)
    _, other = new_token(DIGEST, now_ms=NOW)
    f = _fields()
    with pytest.raises(Unauthenticated, match="proof does not match"):
        verify_join_proof(record, _proof(other.secret, f), f, NOW)
    with pytest.raises(Unauthenticated, match="proof does not match"):
        verify_join_proof(record, b"", f, NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "a3"},
        {"csr_der": b"\x30other"},
        {"advertise": "127.0.0.1:7009"},
        {"admission_advertise": ""},
        {"ca_digest": "cd" * 32},
        {"time_ms": NOW + 1},
    ],
)
def test_proof_binds_every_field(change: dict[str, object]) -> None:
    _, record = new_token(DIGEST, now_ms=NOW)
    proof = _proof(record.secret, _fields())
    with pytest.raises(Unauthenticated, match="proof does not match"):
        verify_join_proof(record, proof, _fields(**change), NOW)


def test_encoding_is_unambiguous() -> None:
    a = _fields(name="ab", advertise="c")
    b = _fields(name="a", advertise="bc")
    assert a.encode() != b.encode()


def test_proof_expired_revoked_skew() -> None:
    _, record = new_token(DIGEST, now_ms=NOW, ttl_ms=60_000)
    f = _fields(time_ms=NOW + 60_000)
    proof = _proof(record.secret, f)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_join_proof(record, proof, f, NOW + 60_000)
    with pytest.raises(Unauthenticated, match="revoked"):
        verify_join_proof(record.revoke(), proof, f, NOW + 1)
    _, record = new_token(DIGEST, now_ms=NOW)
    f = _fields(time_ms=NOW)
    proof = _proof(record.secret, f)
    verify_join_proof(record, proof, f, NOW + 300_000)
    with pytest.raises(Unauthenticated, match="clock"):
        verify_join_proof(record, proof, f, NOW + 300_001)
    with pytest.raises(Unauthenticated, match="clock"):
        verify_join_proof(record, proof, f, NOW - 10_000, max_skew_ms=5_000)
