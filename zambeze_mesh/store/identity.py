"""This agent's identity and the mesh CA material.

Names, certificates and the incarnation live in the store; the private keys live in
key files beside it (:mod:`zambeze_mesh.security.keyfiles`), never in the database.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from zambeze_mesh.errors import FailedPrecondition
from zambeze_mesh.security import keyfiles
from zambeze_mesh.store.db import Store


@dataclass(frozen=True)
class StoredIdentity:
    """Key, certificate and CA of this agent (``ca_key_pem`` only on CA holders).

    ``ca_key_pem`` is the PEM as stored: it may be encrypted with a passphrase
    (:attr:`ca_key_encrypted`).
    """

    name: str
    mesh: str
    key_pem: bytes
    cert_der: bytes
    ca_cert_der: bytes
    ca_key_pem: bytes | None
    incarnation: int

    @property
    def ca_key_encrypted(self) -> bool:
        """True when this agent holds the CA key encrypted at rest."""
        return self.ca_key_pem is not None and keyfiles.is_encrypted(self.ca_key_pem)


def home_of(store: Store) -> Path:
    """The agent home a store belongs to (its key files are there)."""
    return store.path.parent


def save_identity(store: Store, ident: StoredIdentity) -> None:
    """Write the key files, then the identity row (exactly one per home, without keys)."""
    root = home_of(store)
    keyfiles.write_agent_key(root, ident.key_pem)
    if ident.ca_key_pem is not None:
        keyfiles.write_ca_key(root, ident.ca_key_pem)
    with store.tx() as db:
        db.execute(
            "INSERT OR REPLACE INTO identity (id, name, mesh, key_pem, cert_der, ca_cert_der,"
            " ca_key_pem, incarnation, created_ms) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ident.name,
                ident.mesh,
                b"",
                ident.cert_der,
                ident.ca_cert_der,
                None,
                ident.incarnation,
                int(time.time() * 1000),
            ),
        )


def load_identity(store: Store) -> StoredIdentity:
    """Read the identity, or raise if this home has none."""
    rows = store.read(
        "SELECT name, mesh, cert_der, ca_cert_der, incarnation FROM identity WHERE id = 1"
    )
    if not rows:
        raise FailedPrecondition("this home has no identity: run `zmesh init` or `zmesh join`")
    r = rows[0]
    root = home_of(store)
    return StoredIdentity(
        name=r["name"],
        mesh=r["mesh"],
        key_pem=keyfiles.read_agent_key(root),
        cert_der=bytes(r["cert_der"]),
        ca_cert_der=bytes(r["ca_cert_der"]),
        ca_key_pem=keyfiles.read_ca_key(root),
        incarnation=int(r["incarnation"]),
    )


def m4_keys_to_files(db: sqlite3.Connection) -> None:
    """Migration: move the private keys out of the identity row into key files.

    The columns are overwritten (``secure_delete`` zeroes the freed bytes) so that a
    copy of the database no longer holds any key.
    """
    row = db.execute("SELECT key_pem, ca_key_pem FROM identity WHERE id = 1").fetchone()
    if row is None:
        return
    key_pem, ca_key_pem = row[0], row[1]
    files = [r[2] for r in db.execute("PRAGMA database_list") if r[1] == "main"]
    if not files or not files[0]:
        raise FailedPrecondition("cannot move keys out of an in-memory store")
    root = Path(files[0]).parent
    if key_pem:
        keyfiles.write_agent_key(root, bytes(key_pem))
    if ca_key_pem:
        keyfiles.write_ca_key(root, bytes(ca_key_pem))
    db.execute("PRAGMA secure_delete = ON")
    db.execute("UPDATE identity SET key_pem = x'', ca_key_pem = NULL WHERE id = 1")


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
