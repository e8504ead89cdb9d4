"""The campaign journal: live campaign state and the transaction that records it.

:class:`Journal` collects transitions (activity and campaign events, with gap-free
per-campaign sequence numbers) and writes them in one SQLite transaction; only then
are they visible to watchers (:attr:`Live.recent`) and acted upon by the monitor.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from zambeze_mesh.agent.campaign_wire import event, now_ms
from zambeze_mesh.scheduling import CampaignDag
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.store.db import Store
from zambeze_mesh.v1 import common_pb2

log = logging.getLogger("zambeze_mesh.monitor")

MAX_RECENT_EVENTS = 200_000
CAMPAIGN_STATES = {
    "RUNNING": common_pb2.CAMPAIGN_STATE_RUNNING,
    "SUCCEEDED": common_pb2.CAMPAIGN_STATE_SUCCEEDED,
    "FAILED": common_pb2.CAMPAIGN_STATE_FAILED,
    "CANCELLED": common_pb2.CAMPAIGN_STATE_CANCELLED,
}


@dataclass
class Live:
    """A campaign being driven by this monitor."""

    id: str
    name: str
    dag: CampaignDag
    acts: dict[str, cstore.ActivityRow]
    seq: int
    state: str = "RUNNING"
    message: str = ""
    created_ms: int = 0
    owner: str = ""  # who submitted it (security.owners); "" for campaigns from before
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    open: int = -1  # activities not yet in a terminal state
    # Events journaled by this process, for Watch without a database read: recent[i]
    # has seq first_seq + i.
    recent: list[common_pb2.Event] = field(default_factory=list)
    first_seq: int = 0
    # Activities waiting for room (READY): name -> when to offer them again, and how
    # many times in a row they were deferred (for the backoff).
    waiting: dict[str, float] = field(default_factory=dict)
    deferrals: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.open < 0:
            self.open = sum(1 for a in self.acts.values() if a.state not in st.TERMINAL)
        self.first_seq = self.seq + 1

    def remember(self, ev: common_pb2.Event) -> None:
        """Keep a journaled event in memory (bounded: old ones are read from the store)."""
        self.recent.append(ev)
        if len(self.recent) > MAX_RECENT_EVENTS:
            drop = len(self.recent) // 2
            del self.recent[:drop]
            self.first_seq += drop

    def states(self) -> Mapping[str, str]:
        """Activity name -> state, as a live O(1) view (no copy)."""
        return _StateView(self.acts)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class _StateView(Mapping[str, str]):
    """A read-only mapping name -> state over the activity rows."""

    __slots__ = ("_rows",)

    def __init__(self, rows: dict[str, cstore.ActivityRow]) -> None:
        self._rows = rows

    def __getitem__(self, key: str) -> str:
        return self._rows[key].state

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class CommitFault(sqlite3.OperationalError):
    """A journal commit failed on purpose (see :class:`CommitFaults`)."""


class CommitFaults:
    """Fails chosen journal commits, for tests of what a failed commit leaves behind.

    Commits are numbered from 1 as they happen; :meth:`fail` arms the ``n``-th commit
    from now, :meth:`fail_for` every commit during a time window (a full disk, say).
    A failing commit raises inside its transaction, so SQLite really rolls it back.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import time

        self.clock = clock or time.monotonic
        self.commits = 0  # journal commits attempted so far
        self.failed = 0  # of which failed on purpose
        self._at: set[int] = set()
        self._until = 0.0

    def fail(self, n: int) -> None:
        """Fail the ``n``-th commit from now (1 = the next one)."""
        self._at.add(self.commits + n)

    def fail_for(self, seconds: float) -> None:
        """Fail every commit for the next ``seconds``."""
        self._until = self.clock() + seconds

    def check(self) -> None:
        """Called by the journal inside its transaction, just before it commits."""
        self.commits += 1
        if self.commits in self._at or self.clock() < self._until:
            self._at.discard(self.commits)
            self.failed += 1
            raise CommitFault(f"journal commit {self.commits} failed on purpose")


class Journal:
    """Collects transitions and writes them in one transaction before anything acts."""

    def __init__(
        self, store: Store, live: dict[str, Live], faults: CommitFaults | None = None
    ) -> None:
        self.store = store
        self.faults = faults
        self.live = live  # campaigns being driven: a finished one leaves it on commit
        self.events: list[tuple[Live, common_pb2.Event]] = []
        self.rows: dict[tuple[str, str], tuple[Live, cstore.ActivityRow]] = {}
        self.finished: list[Live] = []
        self.before: Callable[[sqlite3.Connection], None] | None = None

    def activity(
        self,
        live: Live,
        name: str,
        state: str,
        *,
        message: str = "",
        detail: dict[str, str] | None = None,
        result: bytes = b"",
        agent: str | None = None,
        attempt: int | None = None,
    ) -> None:
        row = live.acts[name]
        if state in st.TERMINAL and row.state not in st.TERMINAL:
            live.open -= 1
        row.state = state
        if agent is not None:
            row.agent = agent
        if attempt is not None:
            row.attempt = attempt
        row.message = message
        if detail:
            row.detail.update(detail)
        if result:
            row.result = result
        live.seq += 1
        ev = event(
            live.id,
            name,
            state,
            attempt=row.attempt,
            agent=row.agent,
            message=message,
            detail=detail,
            result=result,
        )
        ev.seq = live.seq
        self.events.append((live, ev))
        self.rows[(live.id, name)] = (live, row)

    def campaign(self, live: Live, state: str, message: str = "") -> None:
        live.state = state
        live.message = message
        live.seq += 1
        ev = event(live.id, campaign_state=CAMPAIGN_STATES[state], message=message)
        ev.seq = live.seq
        self.events.append((live, ev))
        if state != "RUNNING":
            self.finished.append(live)

    def commit(self) -> None:
        if not self.events:
            return
        with self.store.tx() as db:
            if self.before is not None:
                self.before(db)
                self.before = None
            cstore.append_events(db, [ev for _, ev in self.events])
            cstore.save_activities(db, [(live.id, row) for live, row in self.rows.values()])
            for live in self.finished:
                cstore.finish_campaign(db, live.id, live.state, live.message, now_ms())
            if self.faults is not None:
                self.faults.check()
        for live, ev in self.events:
            live.remember(ev)
        touched = {id(live): live for live, _ in self.events}
        for live in touched.values():
            live.notify()
        for live in self.finished:
            self.live.pop(live.id, None)
            log_event(log, "campaign.finished", campaign=live.id, state=live.state)
        self.events.clear()
        self.rows.clear()
        self.finished.clear()
