"""The membership view persisted across restarts (the last known state of every member)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from zambeze_mesh.store.db import Store

#: The stored status of a member admitted by this agent but not yet seen in gossip.
JOINING: Final = "joining"


@dataclass(frozen=True)
class MemberRow:
    """One member as last seen."""

    name: str
    address: str
    admission_address: str
    incarnation: int
    status: str
    """The stored spelling: a :class:`~zambeze_mesh.membership.status.MemberStatus`
    value, or :data:`JOINING` for a member admitted here and not yet seen in gossip."""
    signed_record: bytes | None


def upsert_members(store: Store, rows: list[MemberRow]) -> None:
    """Insert or update many members in one transaction."""
    now = int(time.time() * 1000)
    with store.tx() as db:
        db.executemany(
            "INSERT INTO members (name, address, admission_address, incarnation, status,"
            " signed_record, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET address=excluded.address,"
            " admission_address=excluded.admission_address, incarnation=excluded.incarnation,"
            " status=excluded.status,"
            " signed_record=COALESCE(excluded.signed_record, members.signed_record),"
            " updated_ms=excluded.updated_ms",
            [
                (
                    r.name,
                    r.address,
                    r.admission_address,
                    r.incarnation,
                    r.status,
                    r.signed_record,
                    now,
                )
                for r in rows
            ],
        )


def load_members(store: Store) -> list[MemberRow]:
    """All persisted members, by name."""
    return [
        MemberRow(
            r["name"],
            r["address"],
            r["admission_address"],
            r["incarnation"],
            r["status"],
            bytes(r["signed_record"]) if r["signed_record"] is not None else None,
        )
        for r in store.read("SELECT * FROM members ORDER BY name")
    ]
