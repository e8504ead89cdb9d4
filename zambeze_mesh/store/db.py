"""SQLite persistence for one agent: WAL mode, a schema version and forward migrations.

Every agent home holds one database (``zmesh.db``). Writers use short transactions;
readers (the CLI while the agent runs) see a consistent snapshot thanks to WAL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from zambeze_mesh.errors import FailedPrecondition

Migration = Callable[[sqlite3.Connection], None]


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Execute several statements inside the caller's transaction.

    (``executescript`` would commit first, breaking the migration's atomicity.)
    """
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _m1_foundation(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE identity (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            name TEXT NOT NULL,
            mesh TEXT NOT NULL,
            key_pem BLOB NOT NULL,
            cert_der BLOB NOT NULL,
            ca_cert_der BLOB NOT NULL,
            ca_key_pem BLOB,
            incarnation INTEGER NOT NULL DEFAULT 0,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE tokens (
            token_id TEXT PRIMARY KEY,
            secret TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0,
            uses INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE members (
            name TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            admission_address TEXT NOT NULL DEFAULT '',
            incarnation INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            signed_record BLOB,
            updated_ms INTEGER NOT NULL
        );
        CREATE TABLE ca_holders (
            name TEXT PRIMARY KEY,
            address TEXT NOT NULL
        );
        """,
    )


def _m2_campaigns(db: sqlite3.Connection) -> None:
    from zambeze_mesh.store.campaigns import m2_campaigns

    m2_campaigns(db)


def _m3_campaign_requests(db: sqlite3.Connection) -> None:
    from zambeze_mesh.store.campaigns import m3_campaign_requests

    m3_campaign_requests(db)


def _m4_keys_to_files(db: sqlite3.Connection) -> None:
    from zambeze_mesh.store.identity import m4_keys_to_files

    m4_keys_to_files(db)


def _m5_owners(db: sqlite3.Connection) -> None:
    from zambeze_mesh.store.campaigns import m5_owners

    m5_owners(db)


#: Forward-only migrations; index i upgrades schema version i to i+1.
MIGRATIONS: list[Migration] = [
    _m1_foundation,
    _m2_campaigns,
    _m3_campaign_requests,
    _m4_keys_to_files,
    _m5_owners,
]


class Store:
    """A thread-safe handle on the agent's SQLite database.

    All access goes through :meth:`tx` (a write transaction) or :meth:`read`.
    """

    def __init__(self, path: Path, migrations: list[Migration] | None = None) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        before = self.schema_version
        self.migrate(migrations if migrations is not None else MIGRATIONS)
        if self.schema_version != before:
            # Old pages (a key moved out of the store, say) must not linger in the WAL.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        row = self._db.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def migrate(self, migrations: list[Migration]) -> None:
        """Apply the migrations the database has not seen yet, each in its own transaction."""
        with self._lock:
            version = self.schema_version
            if version > len(migrations):
                raise FailedPrecondition(
                    f"database {self.path.name} has schema version {version}, newer than this "
                    f"zmesh understands ({len(migrations)}): upgrade zambeze-mesh"
                )
            for i in range(version, len(migrations)):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    migrations[i](self._db)
                    self._db.execute(f"PRAGMA user_version = {i + 1}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """Run a read-only query and return all rows."""
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            try:
                self._db.close()
            except sqlite3.ProgrammingError:
                pass
