"""Grants (HMAC tokens) and transfer-method choice."""

from __future__ import annotations

import pytest

from zambeze_mesh.data.grants import GrantIssuer
from zambeze_mesh.data.methods import GRPC_STREAM, RSYNC, choose_method, normalize_methods
from zambeze_mesh.errors import InvalidInput, NotPermitted

ME = "spiffe://mesh/agent/b"
OTHER = "spiffe://mesh/agent/c"
SECRET = b"s" * 32


def test_grant_round_trip_and_compact() -> None:
    g = GrantIssuer(SECRET)
    tok = g.issue(ME, "images/x.h5", 1_000)
    assert g.check(tok, ME, 999) == "images/x.h5"
    assert len(tok) < 120
    assert GrantIssuer.expires_ms(tok) == 1_000
    assert g.issue(ME, "images/x.h5", 1_000) != tok  # nonce


def test_grant_other_identity() -> None:
    g = GrantIssuer(SECRET)
    tok = g.issue(ME, "p", 1_000)
    with pytest.raises(NotPermitted, match="another identity"):
        g.check(tok, OTHER, 0)


def test_grant_expired() -> None:
    g = GrantIssuer(SECRET)
    tok = g.issue(ME, "p", 1_000)
    with pytest.raises(NotPermitted, match="expired"):
        g.check(tok, ME, 1_000)


def test_grant_tampered_every_byte() -> None:
    g = GrantIssuer(SECRET)
    tok = g.issue(ME, "p", 10_000)
    for i in range(len(tok)):
        bad = bytearray(tok)
        bad[i] ^= 0x01
        with pytest.raises(NotPermitted):
            g.check(bytes(bad), ME, 0)


def test_grant_for_other_object_cannot_be_retargeted() -> None:
    """Rewriting the embedded path (to another object) breaks the MAC."""
    g = GrantIssuer(SECRET)
    tok = g.issue(ME, "a.txt", 10_000)
    forged = tok.replace(b"a.txt", b"b.txt")
    assert forged != tok
    with pytest.raises(NotPermitted, match="not valid"):
        g.check(forged, ME, 0)
    assert g.check(g.issue(ME, "b.txt", 10_000), ME, 0) == "b.txt"


@pytest.mark.parametrize("token", [b"", b"x" * 10, b"\x01" + b"\x00" * 60, b"z" * 10_000])
def test_grant_garbage(token: bytes) -> None:
    with pytest.raises(NotPermitted, match="not valid"):
        GrantIssuer(SECRET).check(token, ME, 0)


def test_grant_other_secret_and_rotation() -> None:
    old = GrantIssuer(b"o" * 32)
    tok = old.issue(ME, "p", 10_000)
    with pytest.raises(NotPermitted, match="not valid"):
        GrantIssuer(SECRET).check(tok, ME, 0)
    assert GrantIssuer(SECRET, previous=[b"o" * 32]).check(tok, ME, 0) == "p"


def test_grant_bad_inputs() -> None:
    with pytest.raises(InvalidInput):
        GrantIssuer(b"short")
    g = GrantIssuer(SECRET)
    with pytest.raises(InvalidInput):
        g.issue("", "p", 1)
    with pytest.raises(InvalidInput):
        g.issue(ME, "p" * 5000, 1)
    with pytest.raises(InvalidInput):
        g.issue(ME, "p", -1)


def test_grant_deterministic_nonce() -> None:
    g = GrantIssuer(SECRET, random_bytes=lambda n: b"\x00" * n)
    assert g.issue(ME, "p", 5) == g.issue(ME, "p", 5)


@pytest.mark.parametrize(
    ("prefs", "holder", "chosen"),
    [
        ([RSYNC, GRPC_STREAM], [GRPC_STREAM, RSYNC], RSYNC),
        ([GRPC_STREAM, RSYNC], [RSYNC], GRPC_STREAM),
        ([RSYNC], [], GRPC_STREAM),
        ([], [RSYNC], GRPC_STREAM),
        (["globus", RSYNC], [RSYNC, "globus"], "globus"),
        (["globus"], [RSYNC], GRPC_STREAM),
    ],
)
def test_choose_method(prefs: list[str], holder: list[str], chosen: str) -> None:
    assert choose_method(prefs, holder) == chosen


def test_normalize_methods() -> None:
    assert normalize_methods([RSYNC, RSYNC]) == [RSYNC, GRPC_STREAM]
    with pytest.raises(InvalidInput):
        normalize_methods(["Bad Name"])
    with pytest.raises(InvalidInput):
        normalize_methods([f"m{i}" for i in range(40)])
    with pytest.raises(InvalidInput):
        choose_method([""], [])
