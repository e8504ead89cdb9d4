"""A tiny key/value view of the store's ``meta`` table (text keys, text values)."""

from __future__ import annotations

from collections.abc import Callable

from zambeze_mesh.store.db import Store

__all__ = ["get", "get_or_create", "put"]


def get(store: Store, key: str) -> str | None:
    """The value stored under ``key``, or None."""
    rows = store.read("SELECT value FROM meta WHERE key = ?", (key,))
    return str(rows[0]["value"]) if rows else None


def put(store: Store, key: str, value: str) -> None:
    """Store ``value`` under ``key`` (replacing any previous value)."""
    with store.tx() as db:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def get_or_create(store: Store, key: str, make: Callable[[], str]) -> str:
    """The value under ``key``; if there is none, store ``make()`` first (atomically)."""
    with store.tx() as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return str(row[0])
        value = make()
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        return value
