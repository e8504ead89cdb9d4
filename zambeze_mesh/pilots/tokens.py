"""Pilot join tokens: ordinary join tokens plus a scope (a name prefix) and single use.

The token itself is a normal ``ZMESH1-...`` token in the ``tokens`` table (so the join
proof is checked as for any token); the ``pilot_tokens`` table adds the name prefix a
joiner must use (``<agent>-pilot-``) and whether the token was already spent.
Admission calls :func:`check_scope` for every token it knows.
"""

from __future__ import annotations

import time

from zambeze_mesh.errors import Unauthenticated
from zambeze_mesh.store.db import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pilot_tokens (
    token_id TEXT PRIMARY KEY,
    name_prefix TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
)
"""


def _ensure(store: Store) -> None:
    with store.tx() as db:
        db.execute(_SCHEMA)


def create_pilot_token(store: Store, name_prefix: str, ttl_s: int) -> str:
    """A new single-use join token valid for ``ttl_s`` s, only for names ``name_prefix*``."""
    from zambeze_mesh.security import tokens as tokmod
    from zambeze_mesh.store.tokens import create_token

    if not name_prefix:
        raise ValueError("a pilot token needs a name prefix")
    token = create_token(store, ttl_s)
    _ensure(store)
    token_id = tokmod.parse_token(token).token_id
    with store.tx() as db:
        db.execute(
            "INSERT INTO pilot_tokens (token_id, name_prefix) VALUES (?, ?)",
            (token_id, name_prefix),
        )
    return token


def outstanding(store: Store, name_prefix: str) -> int:
    """How many pilot tokens for ``name_prefix`` are unspent, unexpired and not revoked."""
    _ensure(store)
    rows = store.read(
        "SELECT COUNT(*) AS n FROM pilot_tokens p JOIN tokens t ON t.token_id = p.token_id"
        " WHERE p.name_prefix = ? AND p.used = 0 AND t.revoked = 0 AND t.expires_ms > ?",
        (name_prefix, int(time.time() * 1000)),
    )
    return int(rows[0]["n"])


def check_scope(store: Store, token_id: str, name: str) -> None:
    """Refuse ``name`` for a scoped token it does not match, or a spent one; spend it.

    Tokens without a scope pass untouched.
    """
    _ensure(store)
    rows = store.read("SELECT name_prefix FROM pilot_tokens WHERE token_id = ?", (token_id,))
    if not rows:
        return
    prefix = rows[0]["name_prefix"]
    if not name.startswith(prefix) or len(name) == len(prefix):
        raise Unauthenticated(f"this pilot token only admits names {prefix}<job id>")
    with store.tx() as db:
        cur = db.execute(
            "UPDATE pilot_tokens SET used = 1 WHERE token_id = ? AND used = 0", (token_id,)
        )
        if cur.rowcount == 0:
            raise Unauthenticated("this single-use pilot token was already used")
