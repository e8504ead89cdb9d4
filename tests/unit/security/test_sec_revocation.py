"""CA-signed revocations: signing, verification and enforcement by the interceptor."""

from __future__ import annotations

import pytest

from tests.unit.security.test_sec_interceptor import FakeContext
from zambeze_mesh.errors import InvalidInput, NotPermitted, Unauthenticated
from zambeze_mesh.security import AuthorizationInterceptor, Identity, MeshCA, der_to_pem
from zambeze_mesh.security.revocation import (
    RevocationSet,
    der_digest,
    sign_revocation,
    verify_revocation,
)
from zambeze_mesh.v1 import membership_pb2


def test_signed_revocation_verifies_and_lists_the_certificates(ca: MeshCA) -> None:
    _, cert = ca.issue(Identity.agent("alpha", "gone"))
    signed = sign_revocation(ca, "gone", [der_digest(cert)], now_ms=5)
    rev = verify_revocation(signed, ca.cert, mesh="alpha")
    assert (rev.name, list(rev.cert_sha256), rev.revoked_unix_ms) == ("gone", [der_digest(cert)], 5)
    revoked = RevocationSet()
    assert revoked.add(rev) and not revoked.add(rev)  # idempotent
    assert revoked.is_revoked(der_digest(cert)) and revoked.name_of(der_digest(cert)) == "gone"


def test_forged_or_foreign_revocations_are_refused(
    ca: MeshCA, rogue_ca: MeshCA, other_ca: MeshCA
) -> None:
    digest = "ab" * 32
    with pytest.raises(NotPermitted, match="not signed by the mesh CA"):
        verify_revocation(sign_revocation(rogue_ca, "x", [digest]), ca.cert, mesh="alpha")
    with pytest.raises(NotPermitted, match="mesh"):
        verify_revocation(sign_revocation(other_ca, "x", [digest]), other_ca.cert, mesh="alpha")
    good = sign_revocation(ca, "x", [digest])
    tampered = membership_pb2.SignedRevocation(
        revocation=good.revocation + b"\x10\x01", signature=good.signature
    )
    with pytest.raises(NotPermitted):
        verify_revocation(tampered, ca.cert, mesh="alpha")
    with pytest.raises(InvalidInput):
        sign_revocation(ca, "x", [])
    with pytest.raises(InvalidInput):
        sign_revocation(ca, "x", ["not-hex"])


def test_interceptor_refuses_a_revoked_certificate(ca: MeshCA) -> None:
    _, cert = ca.issue(Identity.agent("alpha", "gone"))
    _, other = ca.issue(Identity.client("alpha", "fine"))
    revoked = RevocationSet()
    icpt = AuthorizationInterceptor("alpha", ca.cert, revoked=revoked.cert_revoked)
    assert icpt.caller_of(FakeContext(pem=der_to_pem(cert))).name == "gone"
    revoked.add(
        verify_revocation(sign_revocation(ca, "gone", [der_digest(cert)]), ca.cert, mesh="alpha")
    )
    with pytest.raises(Unauthenticated, match="revoked"):
        icpt.caller_of(FakeContext(pem=der_to_pem(cert)))
    assert icpt.caller_of(FakeContext(pem=der_to_pem(other))).name == "fine"
