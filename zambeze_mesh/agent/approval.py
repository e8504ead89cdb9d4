"""Operator approval of joins (``join_approval = true`` on the CA holder).

A join with a valid token is not signed at once: the CA holder records it as pending
(name, address, the joiner's key) and answers FAILED_PRECONDITION; ``zmesh join`` asks
again until the operator runs ``zmesh members approve NAME`` on the CA holder, which
approves that very key. Pending requests live in the store's meta table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from zambeze_mesh.errors import NotFound
from zambeze_mesh.store import kv
from zambeze_mesh.store.db import Store

#: Words in the FAILED_PRECONDITION message that tell the joiner to wait and ask again.
APPROVAL_MARK = "awaits operator approval"
_PENDING = "join-pending/"
#: A pending request not renewed for this long is dropped from the list.
PENDING_TTL_MS = 3600 * 1000


@dataclass(frozen=True)
class PendingJoin:
    """A join waiting for the operator."""

    name: str
    address: str
    key_sha256: str
    requested_ms: int
    approved: bool = False


def _put(store: Store, p: PendingJoin) -> None:
    doc = {
        "address": p.address,
        "key": p.key_sha256,
        "requested_ms": p.requested_ms,
        "approved": p.approved,
    }
    kv.put(store, _PENDING + p.name, json.dumps(doc))


def get_pending(store: Store, name: str) -> PendingJoin | None:
    """The pending join of ``name``, if any."""
    raw = kv.get(store, _PENDING + name)
    if raw is None:
        return None
    d = json.loads(raw)
    return PendingJoin(name, d["address"], d["key"], int(d["requested_ms"]), bool(d["approved"]))


def list_pending(store: Store) -> list[PendingJoin]:
    """Every pending (or approved, not yet collected) join, by name."""
    rows = store.read("SELECT key FROM meta WHERE key LIKE ? ORDER BY key", (_PENDING + "%",))
    now = int(time.time() * 1000)
    out = []
    for r in rows:
        p = get_pending(store, str(r["key"])[len(_PENDING) :])
        if p is not None and now - p.requested_ms < PENDING_TTL_MS:
            out.append(p)
    return out


def check_approved(store: Store, name: str, address: str, key_sha256: str) -> bool:
    """True if the operator approved this name for this key; else record it as pending."""
    p = get_pending(store, name)
    if p is not None and p.approved and p.key_sha256 == key_sha256:
        return True
    if p is None or not p.approved:
        _put(store, PendingJoin(name, address, key_sha256, int(time.time() * 1000)))
    return False


def approve(store: Store, name: str) -> PendingJoin:
    """Approve the key that asked to join as ``name``; NotFound if nothing is pending."""
    p = get_pending(store, name)
    if p is None:
        raise NotFound(f"no join of {name!r} is pending (see `zmesh members pending`)")
    done = PendingJoin(p.name, p.address, p.key_sha256, p.requested_ms, True)
    _put(store, done)
    return done


def collected(store: Store, name: str) -> None:
    """The approved join was signed: forget it."""
    with store.tx() as db:
        db.execute("DELETE FROM meta WHERE key = ?", (_PENDING + name,))
