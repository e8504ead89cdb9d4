"""Join tokens persisted in the store (the secret is kept: it keys the join proof)."""

from __future__ import annotations

from dataclasses import dataclass

from zambeze_mesh.errors import InvalidInput, NotFound, NotPermitted
from zambeze_mesh.security import tokens as tokmod
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.keys import der_to_pem
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import kv
from zambeze_mesh.store.db import Store

_MAX_USES = "token-max-uses/"


@dataclass(frozen=True)
class TokenRow:
    """One join token as stored."""

    token_id: str
    secret: str
    created_ms: int
    expires_ms: int
    revoked: bool
    uses: int


def add_token(store: Store, token_id: str, secret: str, created_ms: int, expires_ms: int) -> None:
    """Store a new token."""
    with store.tx() as db:
        db.execute(
            "INSERT INTO tokens (token_id, secret, created_ms, expires_ms) VALUES (?, ?, ?, ?)",
            (token_id, secret, created_ms, expires_ms),
        )


def get_token(store: Store, token_id: str) -> TokenRow | None:
    """Look a token up by its public id."""
    rows = store.read("SELECT * FROM tokens WHERE token_id = ?", (token_id,))
    if not rows:
        return None
    r = rows[0]
    return TokenRow(
        r["token_id"], r["secret"], r["created_ms"], r["expires_ms"], bool(r["revoked"]), r["uses"]
    )


def revoke_token(store: Store, token_id: str) -> None:
    """Mark a token revoked; raise NotFound for an unknown one."""
    with store.tx() as db:
        cur = db.execute("UPDATE tokens SET revoked = 1 WHERE token_id = ?", (token_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no such token {token_id}")


def count_use(store: Store, token_id: str) -> None:
    """Record one successful admission with a token."""
    with store.tx() as db:
        db.execute("UPDATE tokens SET uses = uses + 1 WHERE token_id = ?", (token_id,))


def set_max_uses(store: Store, token_id: str, uses: int) -> None:
    """Limit a token to ``uses`` admissions."""
    kv.put(store, _MAX_USES + token_id, str(uses))


def max_uses(store: Store, token_id: str) -> int:
    """How many admissions a token allows (0: until it expires)."""
    value = kv.get(store, _MAX_USES + token_id)
    return int(value) if value is not None else 0


def token_record(row: TokenRow) -> tokmod.TokenRecord:
    """The security layer's view of a stored token (for proof verification)."""
    return tokmod.TokenRecord.from_dict(
        {
            "token_id": row.token_id,
            "secret": row.secret,
            "created_ms": row.created_ms,
            "expires_ms": row.expires_ms,
            "revoked": row.revoked,
        }
    )


def create_token(store: Store, ttl_s: int, uses: int = 0) -> str:
    """Make, store and return a new join token valid for ``ttl_s`` seconds.

    ``uses`` > 0 limits how many agents it admits (1: single-use); 0 means until it
    expires. Only a CA holder creates tokens: it is the one that checks every join proof.
    """
    if uses < 0:
        raise InvalidInput("token uses must be a positive number (or 0 for unlimited)")
    ident = idstore.load_identity(store)
    if ident.ca_key_pem is None:
        holders = ", ".join(name for name, _ in idstore.ca_holders(store)) or "the CA holder"
        raise NotPermitted(
            f"agent {ident.name} does not hold the mesh CA key: create join tokens on "
            f"{holders} (a join may still go through this agent as its seed)"
        )
    ca = MeshCA.from_pem(der_to_pem(ident.ca_cert_der))
    token, rec = tokmod.new_token(ca.digest, ttl_ms=ttl_s * 1000)
    stored = rec.to_dict()
    add_token(store, rec.token_id, stored["secret"], rec.created_ms, rec.expires_ms)
    if uses:
        set_max_uses(store, rec.token_id, uses)
    return token
