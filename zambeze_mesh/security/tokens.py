"""Join tokens and the HMAC proof a joiner sends instead of the token's secret.

A token reads ``ZMESH1-<ca digest>-<secret>``: the hex SHA-256 of the mesh CA certificate
(the joiner pins the CA by it: no trust on first use) and 43 characters of URL-safe base64
of 32 random bytes. The secret's alphabet contains ``-``, so parsing splits on the first
two ``-`` only.

Design notes:

* The secret never travels on the wire. The joiner sends ``token_id`` (the public half,
  ``sha256(secret)[:16]`` in hex) and :func:`join_proof`, an HMAC-SHA256 keyed by the
  secret over a canonical, length-prefixed encoding of its CA pin, name, CSR, advertised
  addresses and clock. An eavesdropper replaying a join request only obtains a
  certificate for the joiner's own public key, which is useless without the private key.
* To verify the HMAC the admitting agent must keep the secret itself: a
  :class:`TokenRecord` is a secret at rest, stored in the agent's store, which is
  protected by file mode 0600 (like the CA key next to it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from zambeze_mesh.errors import InvalidInput, Unauthenticated
from zambeze_mesh.v1 import membership_pb2

TOKEN_PREFIX = "ZMESH1"
SECRET_BYTES = 32
SECRET_CHARS = 43
DEFAULT_TTL_MS = 24 * 3600 * 1000
DEFAULT_MAX_SKEW_MS = 300_000
_PROOF_DOMAIN = b"zambeze-mesh join proof v1"

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN_ID_RE = re.compile(r"[0-9a-f]{32}")


def token_id_of(secret: bytes) -> str:
    """The public half of a token: hex of the first 16 bytes of ``sha256(secret)``."""
    return hashlib.sha256(secret).digest()[:16].hex()


def validate_token_id(token_id: str) -> str:
    """Return ``token_id`` if it is 32 lowercase hex characters, else raise InvalidInput."""
    if not isinstance(token_id, str) or not _TOKEN_ID_RE.fullmatch(token_id):
        raise InvalidInput("token id must be 32 lowercase hex characters")
    return token_id


def _encode_secret(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token as the joiner reads it."""

    ca_digest: str
    secret: bytes = field(repr=False)
    token_id: str


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the admitting agent keeps about a token. ``secret`` is a secret at rest."""

    token_id: str
    secret: bytes = field(repr=False)
    created_ms: int
    expires_ms: int
    revoked: bool = False

    def revoke(self) -> TokenRecord:
        """A copy marked revoked."""
        return TokenRecord(self.token_id, self.secret, self.created_ms, self.expires_ms, True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the secret as URL-safe base64) for the agent's store."""
        return {
            "token_id": self.token_id,
            "secret": _encode_secret(self.secret),
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "revoked": self.revoked,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenRecord:
        """Inverse of :meth:`to_dict`."""
        try:
            secret = _decode_secret(str(data["secret"]))
            record = cls(
                token_id=validate_token_id(str(data["token_id"])),
                secret=secret,
                created_ms=int(data["created_ms"]),
                expires_ms=int(data["expires_ms"]),
                revoked=bool(data.get("revoked", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed token record: {exc}") from None
        if token_id_of(record.secret) != record.token_id:
            raise InvalidInput("malformed token record: token id does not match its secret")
        return record


def _decode_secret(text: str) -> bytes:
    if not _SECRET_RE.fullmatch(text):
        raise InvalidInput(
            f"join token secret must be {SECRET_CHARS} characters of URL-safe base64"
        )
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        raise InvalidInput("join token secret is not valid base64") from None
    if len(raw) != SECRET_BYTES or _encode_secret(raw) != text:
        raise InvalidInput("join token secret is not valid base64")
    return raw


def new_token(
    ca_digest: str,
    *,
    now_ms: int | None = None,
    ttl_ms: int = DEFAULT_TTL_MS,
    secret: bytes | None = None,
) -> tuple[str, TokenRecord]:
    """Create a join token for the mesh whose CA has ``ca_digest``.

    Returns the token string (give it to the operator) and the record to store.
    ``secret`` may be passed for deterministic tests; default is 32 random bytes.
    """
    ca_digest = _check_digest(ca_digest)
    if ttl_ms <= 0:
        raise InvalidInput("token lifetime must be positive")
    raw = secrets.token_bytes(SECRET_BYTES) if secret is None else secret
    if len(raw) != SECRET_BYTES:
        raise InvalidInput(f"token secret must be {SECRET_BYTES} bytes")
    created = int(time.time() * 1000) if now_ms is None else now_ms
    token = f"{TOKEN_PREFIX}-{ca_digest}-{_encode_secret(raw)}"
    return token, TokenRecord(token_id_of(raw), raw, created, created + ttl_ms)


def _check_digest(ca_digest: str) -> str:
    if not isinstance(ca_digest, str) or not _DIGEST_RE.fullmatch(ca_digest):
        raise InvalidInput("CA digest must be 64 lowercase hex characters (sha256)")
    return ca_digest


def parse_token(text: str) -> ParsedToken:
    """Parse ``ZMESH1-<64 hex>-<secret>``; raise InvalidInput saying what is wrong."""
    if not isinstance(text, str):
        raise InvalidInput("join token must be a string")
    text = text.strip()
    parts = text.split("-", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise InvalidInput(f"not a join token: expected {TOKEN_PREFIX}-<64 hex CA digest>-<secret>")
    _, digest, secret_text = parts
    if not _DIGEST_RE.fullmatch(digest.lower()):
        raise InvalidInput("join token CA digest must be 64 hex characters")
    secret = _decode_secret(secret_text)
    return ParsedToken(digest.lower(), secret, token_id_of(secret))


@dataclass(frozen=True, slots=True)
class JoinFields:
    """The parts of a join request that the proof binds."""

    ca_digest: str
    name: str
    csr_der: bytes = field(repr=False)
    advertise: str
    time_ms: int
    admission_advertise: str = ""

    @classmethod
    def from_request(cls, request: membership_pb2.JoinRequest) -> JoinFields:
        """The bound fields of a ``JoinRequest``."""
        return cls(
            ca_digest=request.ca_digest,
            name=request.name,
            csr_der=request.csr_der,
            advertise=request.advertise,
            time_ms=request.time_unix_ms,
            admission_advertise=request.admission_advertise,
        )

    def encode(self) -> bytes:
        """Canonical, length-prefixed encoding (domain-separated) that the HMAC covers."""
        out = bytearray()
        for part in (
            _PROOF_DOMAIN,
            self.ca_digest.encode(),
            self.name.encode(),
            self.csr_der,
            self.advertise.encode(),
            self.admission_advertise.encode(),
        ):
            out += struct.pack(">I", len(part))
            out += part
        out += struct.pack(">q", self.time_ms)
        return bytes(out)


def join_proof(
    secret: bytes,
    *,
    ca_digest: str,
    name: str,
    csr_der: bytes,
    advertise: str,
    time_ms: int,
    admission_advertise: str = "",
) -> bytes:
    """HMAC-SHA256 keyed by the token secret over the canonical join fields."""
    fields = JoinFields(ca_digest, name, csr_der, advertise, time_ms, admission_advertise)
    return proof_for(secret, fields)


def proof_for(secret: bytes, fields: JoinFields) -> bytes:
    """:func:`join_proof` for a :class:`JoinFields`."""
    return hmac.new(secret, fields.encode(), hashlib.sha256).digest()


def verify_join_proof(
    record: TokenRecord,
    proof: bytes,
    fields: JoinFields,
    now_ms: int,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> None:
    """Check a join proof against the stored token; raise Unauthenticated otherwise.

    The proof is checked first (constant-time), so a caller who does not hold the
    secret learns nothing about the token's state.
    """
    expected = proof_for(record.secret, fields)
    if not hmac.compare_digest(expected, proof):
        raise Unauthenticated(f"join token {record.token_id}: proof does not match")
    if record.revoked:
        raise Unauthenticated(f"join token {record.token_id} was revoked")
    if now_ms >= record.expires_ms:
        raise Unauthenticated(f"join token {record.token_id} expired")
    skew = fields.time_ms - now_ms
    if abs(skew) > max_skew_ms:
        raise Unauthenticated(
            f"join request clock is {skew / 1000:+.0f} s off this agent's "
            f"(more than {max_skew_ms / 1000:.0f} s allowed)"
        )
