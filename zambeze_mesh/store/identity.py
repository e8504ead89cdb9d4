"""This agent's identity and the mesh CA material, persisted in the store."""

from __future__ import annotations

import time
from dataclasses import dataclass

from zambeze_mesh.errors import FailedPrecondition
from zambeze_mesh.store.db import Store


@dataclass(frozen=True)
class StoredIdentity:
    """Key, certificate and CA of this agent (``ca_key_pem`` only on CA holders)."""

    name: str
    mesh: str
    key_pem: bytes
    cert_der: bytes
    ca_cert_der: bytes
    ca_key_pem: bytes | None
    incarnation: int


def save_identity(store: Store, ident: StoredIdentity) -> None:
    """Write the identity row (there is exactly one per home)."""
    with store.tx() as db:
        db.execute(
            "INSERT OR REPLACE INTO identity (id, name, mesh, key_pem, cert_der, ca_cert_der,"
            " ca_key_pem, incarnation, created_ms) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ident.name,
                ident.mesh,
                ident.key_pem,
                ident.cert_der,
                ident.ca_cert_der,
                ident.ca_key_pem,
                ident.incarnation,
                int(time.time() * 1000),
            ),
        )


def load_identity(store: Store) -> StoredIdentity:
    """Read the identity, or raise if this home has none."""
    rows = store.read(
        "SELECT name, mesh, key_pem, cert_der, ca_cert_der, ca_key_pem, incarnation"
        " FROM identity WHERE id = 1"
    )
    if not rows:
        raise FailedPrecondition("this home has no identity: run `zmesh init` or `zmesh join`")
    r = rows[0]
    return StoredIdentity(
        name=r["name"],
        mesh=r["mesh"],
        key_pem=bytes(r["key_pem"]),
        cert_der=bytes(r["cert_der"]),
        ca_cert_der=bytes(r["ca_cert_der"]),
        ca_key_pem=bytes(r["ca_key_pem"]) if r["ca_key_pem"] is not None else None,
        incarnation=int(r["incarnation"]),
    )


def bump_incarnation(store: Store, at_least: int) -> int:
    """Persist an incarnation number at least ``at_least``; returns the stored value."""
    with store.tx() as db:
        row = db.execute("SELECT incarnation FROM identity WHERE id = 1").fetchone()
        current = int(row[0]) if row else 0
        value = max(current, at_least)
        db.execute("UPDATE identity SET incarnation = ? WHERE id = 1", (value,))
    return value


def reset_incarnation(store: Store, value: int) -> int:
    """Set the incarnation number to ``value`` even if lower (repairing a poisoned one)."""
    with store.tx() as db:
        db.execute("UPDATE identity SET incarnation = ? WHERE id = 1", (value,))
    return value


def add_ca_holder(store: Store, name: str, address: str) -> None:
    """Remember an agent that holds the CA key (join requests are forwarded there)."""
    with store.tx() as db:
        db.execute(
            "INSERT OR REPLACE INTO ca_holders (name, address) VALUES (?, ?)", (name, address)
        )


def ca_holders(store: Store) -> list[tuple[str, str]]:
    """Known CA holders as (name, address)."""
    return [(r["name"], r["address"]) for r in store.read("SELECT name, address FROM ca_holders")]
