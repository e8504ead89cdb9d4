"""Fetch grants: HMAC-SHA256 tokens bound to an identity, an object and an expiry.

A holder issues a grant in ``Offer`` and checks it in ``Fetch``. The token is
self-contained (the holder keeps no table of grants) and looks like::

    version(1) | expires_ms(8) | nonce(12) | len(identity)(2) | identity
               | len(path)(2) | path | HMAC-SHA256(secret, everything before)(32)

A grant only says *who* may fetch *which* object until *when*; the holder must
still resolve the object path through its :class:`~zambeze_mesh.data.sandbox.Sandbox`
at use time (the export could have changed since the grant was issued).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Sequence

from zambeze_mesh.errors import InvalidInput, NotPermitted

__all__ = ["MAX_TOKEN", "GrantIssuer"]

_VERSION = 1
_HEAD = struct.Struct(">BQ12s")
_LEN = struct.Struct(">H")
_MAC_LEN = 32
_MAX_IDENTITY = 1024
_MAX_PATH = 4096
MAX_TOKEN = _HEAD.size + 2 * _LEN.size + _MAX_IDENTITY + _MAX_PATH + _MAC_LEN
"""Longest token :meth:`GrantIssuer.check` will look at."""

INVALID = "grant is not valid"
OTHER_IDENTITY = "grant was issued to another identity"
EXPIRED = "grant expired"


class GrantIssuer:
    """Issue and check grants with a secret only this holder knows.

    ``previous`` are older secrets still accepted by :meth:`check` (key rotation);
    ``random_bytes`` supplies nonces (tests may pass a deterministic one).
    """

    def __init__(
        self,
        secret: bytes,
        *,
        previous: Sequence[bytes] = (),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        for s in (secret, *previous):
            if len(s) < 16:
                raise InvalidInput("grant secrets must be at least 16 bytes")
        self._keys = [secret, *previous]
        self._random = random_bytes

    def issue(self, identity_uri: str, object_path: str, expires_ms: int) -> bytes:
        """A token letting ``identity_uri`` fetch ``object_path`` until ``expires_ms``."""
        ident = identity_uri.encode("utf-8")
        path = object_path.encode("utf-8", "surrogateescape")
        if not ident or len(ident) > _MAX_IDENTITY:
            raise InvalidInput(f"identity must be 1..{_MAX_IDENTITY} bytes")
        if len(path) > _MAX_PATH:
            raise InvalidInput(f"object path is longer than {_MAX_PATH} bytes")
        if not 0 <= expires_ms < 2**63:
            raise InvalidInput("expiry out of range")
        nonce = self._random(12)
        body = b"".join(
            (
                _HEAD.pack(_VERSION, expires_ms, nonce),
                _LEN.pack(len(ident)),
                ident,
                _LEN.pack(len(path)),
                path,
            )
        )
        return body + self._mac(self._keys[0], body)

    def check(self, token: bytes, identity_uri: str, now_ms: int) -> str:
        """The object path the grant covers, if it is genuine, ours, for this caller and live.

        Raises :class:`NotPermitted` with "grant is not valid" (malformed, forged or
        tampered), "grant was issued to another identity" or "grant expired".
        """
        parsed = self._parse(token)
        if parsed is None:
            raise NotPermitted(INVALID)
        body, mac, expires_ms, ident, path = parsed
        if not any(hmac.compare_digest(self._mac(k, body), mac) for k in self._keys):
            raise NotPermitted(INVALID)
        if not hmac.compare_digest(ident, identity_uri.encode("utf-8")):
            raise NotPermitted(OTHER_IDENTITY)
        if now_ms >= expires_ms:
            raise NotPermitted(EXPIRED)
        return path.decode("utf-8", "surrogateescape")

    @staticmethod
    def expires_ms(token: bytes) -> int:
        """The (unverified) expiry embedded in a token, for display; 0 when malformed."""
        parsed = GrantIssuer._parse(token)
        return parsed[2] if parsed is not None else 0

    @staticmethod
    def _mac(key: bytes, body: bytes) -> bytes:
        return hmac.new(key, body, hashlib.sha256).digest()

    @staticmethod
    def _parse(token: bytes) -> tuple[bytes, bytes, int, bytes, bytes] | None:
        if not isinstance(token, bytes | bytearray) or len(token) > MAX_TOKEN:
            return None
        token = bytes(token)
        if len(token) < _HEAD.size + 2 * _LEN.size + _MAC_LEN:
            return None
        version, expires_ms, _nonce = _HEAD.unpack_from(token, 0)
        if version != _VERSION:
            return None
        pos = _HEAD.size
        (n,) = _LEN.unpack_from(token, pos)
        pos += _LEN.size
        ident = token[pos : pos + n]
        pos += n
        if pos + _LEN.size > len(token):
            return None
        (m,) = _LEN.unpack_from(token, pos)
        pos += _LEN.size
        path = token[pos : pos + m]
        pos += m
        if pos + _MAC_LEN != len(token) or len(ident) != n:
            return None
        return token[:pos], token[pos:], expires_ms, ident, path
