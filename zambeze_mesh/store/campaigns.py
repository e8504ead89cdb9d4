"""Campaign journal (monitor side) and contractor outbox, in the agent's store.

The monitor writes every state change here *before* acting on it; ``Watch`` streams
from the ``events`` table. Contractors keep their events in ``outbox`` until the
monitor acknowledges them, and their accepted work in ``contracts``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from zambeze_mesh.control.records import ActivityRow as ActivityRow  # the one row type
from zambeze_mesh.store.db import Store, run_script
from zambeze_mesh.v1 import campaigns_pb2, common_pb2


def m2_campaigns(db: sqlite3.Connection) -> None:
    """Migration 2: campaigns, activities, events, outbox, contracts."""
    run_script(
        db,
        """
        CREATE TABLE campaigns (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            finished_ms INTEGER,
            message TEXT NOT NULL DEFAULT '',
            last_seq INTEGER NOT NULL DEFAULT 0,
            client_request_id TEXT NOT NULL DEFAULT '',
            request BLOB NOT NULL
        );
        CREATE INDEX campaigns_state ON campaigns(state);
        CREATE TABLE activities (
            campaign_id TEXT NOT NULL REFERENCES campaigns(id),
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            agent TEXT NOT NULL DEFAULT '',
            message TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}',
            result BLOB,
            infra_retries INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (campaign_id, name)
        );
        CREATE TABLE events (
            campaign_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event BLOB NOT NULL,
            PRIMARY KEY (campaign_id, seq)
        );
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            monitor TEXT NOT NULL,
            event BLOB NOT NULL
        );
        CREATE TABLE contracts (
            campaign_id TEXT NOT NULL,
            activity TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            monitor TEXT NOT NULL,
            item BLOB NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (campaign_id, activity, attempt)
        );
        """,
    )


def m3_campaign_requests(db: sqlite3.Connection) -> None:
    """Migration 3: submitted requests move to their own table.

    A campaign's row is updated on every journal commit (``last_seq``); with the
    request (up to the message limit, shipped functions included) in the same row,
    SQLite rewrote that whole blob each time.
    """
    run_script(
        db,
        """
        CREATE TABLE campaign_requests (
            campaign_id TEXT PRIMARY KEY REFERENCES campaigns(id),
            request BLOB NOT NULL
        );
        INSERT INTO campaign_requests (campaign_id, request) SELECT id, request FROM campaigns;
        UPDATE campaigns SET request = x'';
        """,
    )


def m5_owners(db: sqlite3.Connection) -> None:
    """Migration 4: campaigns have an owner; contracts are keyed by their monitor.

    ``owner`` is the identity that submitted the campaign (a SPIFFE ID, or
    ``local:<uid>`` for the Unix socket); rows from before have ``''`` (only admins
    see them). A contract's key gains its monitor, so two monitors naming the same
    (campaign, activity, attempt) never share one.
    """
    run_script(
        db,
        """
        ALTER TABLE campaigns ADD COLUMN owner TEXT NOT NULL DEFAULT '';
        CREATE INDEX campaigns_owner_request ON campaigns(owner, client_request_id);
        CREATE TABLE contracts_new (
            monitor TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            activity TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            item BLOB NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (monitor, campaign_id, activity, attempt)
        );
        INSERT INTO contracts_new (monitor, campaign_id, activity, attempt, item, state)
            SELECT monitor, campaign_id, activity, attempt, item, state FROM contracts;
        DROP TABLE contracts;
        ALTER TABLE contracts_new RENAME TO contracts;
        """,
    )


@dataclass
class CampaignRow:
    """The monitor's current view of one campaign."""

    id: str
    name: str
    state: str
    created_ms: int
    message: str
    last_seq: int
    owner: str = ""
    finished_ms: int = 0


def insert_campaign(
    db: sqlite3.Connection,
    cid: str,
    req: campaigns_pb2.SubmitRequest,
    created_ms: int,
    names: list[str],
    owner: str = "",
) -> None:
    """Create a campaign of ``owner`` and its PENDING activities (in the caller's transaction)."""
    db.execute(
        "INSERT INTO campaigns (id, name, state, created_ms, client_request_id, request, owner)"
        " VALUES (?, ?, 'RUNNING', ?, ?, x'', ?)",
        (cid, req.name, created_ms, req.client_request_id, owner),
    )
    db.execute(
        "INSERT INTO campaign_requests (campaign_id, request) VALUES (?, ?)",
        (cid, req.SerializeToString()),
    )
    db.executemany(
        "INSERT INTO activities (campaign_id, name, state, attempt) VALUES (?, ?, 'PENDING', 1)",
        [(cid, n) for n in names],
    )


def append_events(db: sqlite3.Connection, events: list[common_pb2.Event]) -> None:
    """Journal events (seqs already assigned) and advance each campaign's last_seq."""
    db.executemany(
        "INSERT INTO events (campaign_id, seq, event) VALUES (?, ?, ?)",
        [(ev.campaign_id, ev.seq, ev.SerializeToString()) for ev in events],
    )
    last: dict[str, int] = {}
    for ev in events:
        last[ev.campaign_id] = max(ev.seq, last.get(ev.campaign_id, 0))
    db.executemany(
        "UPDATE campaigns SET last_seq = ? WHERE id = ?", [(v, k) for k, v in last.items()]
    )


def save_activities(db: sqlite3.Connection, rows: list[tuple[str, ActivityRow]]) -> None:
    """Write activities' current states: ``(campaign_id, row)`` pairs."""
    db.executemany(
        "UPDATE activities SET state=?, attempt=?, agent=?, message=?, detail=?, result=?,"
        " infra_retries=? WHERE campaign_id=? AND name=?",
        [
            (
                a.state,
                a.attempt,
                a.agent,
                a.message,
                json.dumps(a.detail),
                a.result or None,
                a.infra_retries,
                cid,
                a.name,
            )
            for cid, a in rows
        ],
    )


def finish_campaign(
    db: sqlite3.Connection, cid: str, state: str, message: str, finished_ms: int
) -> None:
    """Record a campaign's final state."""
    db.execute(
        "UPDATE campaigns SET state=?, message=?, finished_ms=? WHERE id=?",
        (state, message, finished_ms, cid),
    )


def load_campaign(store: Store, cid: str) -> CampaignRow | None:
    """One campaign, or None."""
    rows = store.read("SELECT * FROM campaigns WHERE id = ?", (cid,))
    return _campaign(rows[0]) if rows else None


def find_by_request_id(store: Store, request_id: str, owner: str = "") -> str | None:
    """The campaign ``owner`` submitted with this idempotency key, if any."""
    rows = store.read(
        "SELECT id FROM campaigns WHERE owner = ? AND client_request_id = ?", (owner, request_id)
    )
    return str(rows[0]["id"]) if rows else None


def _campaign(r: sqlite3.Row) -> CampaignRow:
    return CampaignRow(
        r["id"],
        r["name"],
        r["state"],
        r["created_ms"],
        r["message"],
        r["last_seq"],
        owner=r["owner"],
        finished_ms=r["finished_ms"] or 0,
    )


def load_request(store: Store, cid: str) -> campaigns_pb2.SubmitRequest | None:
    """The SubmitRequest a campaign was created from, or None."""
    rows = store.read("SELECT request FROM campaign_requests WHERE campaign_id = ?", (cid,))
    if not rows:
        return None
    return campaigns_pb2.SubmitRequest.FromString(bytes(rows[0]["request"]))


def list_campaigns(
    store: Store, limit: int, state: str | None = None, owner: str | None = None
) -> list[CampaignRow]:
    """Campaigns, newest first (only ``owner``'s when given)."""
    where, args = [], []
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if owner is not None:
        where.append("owner = ?")
        args.append(owner)
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    rows = store.read(
        f"SELECT * FROM campaigns{cond} ORDER BY created_ms DESC LIMIT ?", (*args, limit)
    )
    return [_campaign(r) for r in rows]


def load_activities(store: Store, cid: str) -> list[ActivityRow]:
    """All activities of a campaign, in submission order."""
    return [
        ActivityRow(
            r["name"],
            r["state"],
            r["attempt"],
            r["agent"],
            r["message"],
            json.loads(r["detail"]),
            bytes(r["result"]) if r["result"] is not None else b"",
            r["infra_retries"],
        )
        for r in store.read("SELECT * FROM activities WHERE campaign_id = ? ORDER BY rowid", (cid,))
    ]


def events_after(store: Store, cid: str, after: int, limit: int = 1000) -> list[common_pb2.Event]:
    """Journaled events with seq > ``after``, in order."""
    out = []
    for r in store.read(
        "SELECT event FROM events WHERE campaign_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (cid, after, limit),
    ):
        ev = common_pb2.Event()
        ev.ParseFromString(bytes(r["event"]))
        out.append(ev)
    return out


# ---------------------------------------------------------------- contractor side
def outbox_add(db: sqlite3.Connection, monitor: str, ev: common_pb2.Event) -> int:
    """Queue an event for ``monitor``; returns its outbox sequence number."""
    cur = db.execute(
        "INSERT INTO outbox (monitor, event) VALUES (?, ?)", (monitor, ev.SerializeToString())
    )
    return int(cur.lastrowid or 0)


def outbox_delete(db: sqlite3.Connection, seqs: list[int]) -> None:
    """Forget acknowledged events (inside a transaction)."""
    if seqs:
        db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])


def outbox_pending(store: Store, limit: int = 2000) -> list[tuple[int, str, common_pb2.Event]]:
    """Unacknowledged events, oldest first: (outbox seq, monitor, event)."""
    out = []
    for r in store.read("SELECT seq, monitor, event FROM outbox ORDER BY seq LIMIT ?", (limit,)):
        ev = common_pb2.Event()
        ev.ParseFromString(bytes(r["event"]))
        out.append((int(r["seq"]), str(r["monitor"]), ev))
    return out


def contract_put(
    db: sqlite3.Connection,
    monitor: str,
    cid: str,
    activity: str,
    attempt: int,
    item: bytes,
    state: str,
) -> None:
    """Record or update ``monitor``'s accepted work."""
    db.execute(
        "INSERT INTO contracts (monitor, campaign_id, activity, attempt, item, state)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(monitor, campaign_id, activity, attempt)"
        " DO UPDATE SET state = excluded.state",
        (monitor, cid, activity, attempt, item, state),
    )


def contracts_open(store: Store) -> list[tuple[str, str, int, str, bytes]]:
    """Contracts not finished: (campaign, activity, attempt, monitor, item)."""
    return [
        (r["campaign_id"], r["activity"], r["attempt"], r["monitor"], bytes(r["item"]))
        for r in store.read(
            "SELECT * FROM contracts WHERE state NOT IN ('SUCCEEDED','FAILED','CANCELLED')"
        )
    ]
