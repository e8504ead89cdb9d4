"""The campaign journal: the shell's side of the monitor's records.

:class:`Live` is a campaign driven by this process (the machine's
:class:`~zambeze_mesh.control.records.CampaignRun` plus what the shell keeps: the
DAG for placement, recent events for Watch, backoffs). :class:`Journal` writes the
records of a group of steps in one SQLite transaction; only then are they visible
to watchers (:attr:`Live.recent`) and acted upon by the monitor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from zambeze_mesh.agent.campaign_wire import event, now_ms
from zambeze_mesh.control.graph import Graph
from zambeze_mesh.control.records import (
    ActivityRecord,
    ActivityRow,
    CampaignRun,
    Record,
    Transaction,
)
from zambeze_mesh.control.states import CampaignState
from zambeze_mesh.scheduling import CampaignDag
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.store.db import Store
from zambeze_mesh.v1 import common_pb2

log = logging.getLogger("zambeze_mesh.monitor")

MAX_RECENT_EVENTS = 200_000
CAMPAIGN_STATES: dict[str, common_pb2.CampaignState.ValueType] = {
    CampaignState.RUNNING: common_pb2.CAMPAIGN_STATE_RUNNING,
    CampaignState.SUCCEEDED: common_pb2.CAMPAIGN_STATE_SUCCEEDED,
    CampaignState.FAILED: common_pb2.CAMPAIGN_STATE_FAILED,
    CampaignState.CANCELLED: common_pb2.CAMPAIGN_STATE_CANCELLED,
}
#: An illegal activity transition raises (tests) instead of being logged and refused.
STRICT_TRANSITIONS = os.environ.get("ZMESH_STRICT_MACHINES", "") not in ("", "0")


def graph_of(dag: CampaignDag) -> Graph:
    """The plain adjacency of a validated DAG, for the state machine."""
    order = dag.topological_order()
    return Graph.of(
        order,
        {n: dag.predecessors(n) for n in order},
        {n: a.retries for n, a in dag.activities.items()},
    )


@dataclass(kw_only=True)
class Live(CampaignRun):
    """A campaign being driven by this monitor."""

    dag: CampaignDag
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Events journaled by this process, for Watch without a database read: recent[i]
    # has seq first_seq + i.
    recent: list[common_pb2.Event] = field(default_factory=list)
    first_seq: int = 0
    # Activities waiting for room (READY): name -> when to offer them again, and how
    # many times in a row they were deferred (for the backoff).
    waiting: dict[str, float] = field(default_factory=dict)
    deferrals: dict[str, int] = field(default_factory=dict)
    #: True once its final event is committed (``state`` changes a moment earlier,
    #: while the step that ends it is being written).
    ended: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.first_seq = self.seq + 1

    @property
    def committed_seq(self) -> int:
        """The seq of the last committed event (``seq`` may be ahead during a write)."""
        return self.first_seq + len(self.recent) - 1

    def remember(self, ev: common_pb2.Event) -> None:
        """Keep a journaled event in memory (bounded: old ones are read from the store)."""
        self.recent.append(ev)
        if len(self.recent) > MAX_RECENT_EVENTS:
            drop = len(self.recent) // 2
            del self.recent[:drop]
            self.first_seq += drop

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def to_event(rec: Record) -> common_pb2.Event:
    """A record as the Event clients watch."""
    if isinstance(rec, ActivityRecord):
        ev = event(
            rec.campaign_id,
            rec.activity,
            rec.state,
            attempt=rec.attempt,
            agent=rec.agent,
            message=rec.message,
            detail=dict(rec.detail),
            result=rec.result,
        )
    else:
        ev = event(rec.campaign_id, campaign_state=CAMPAIGN_STATES[rec.state], message=rec.message)
    ev.seq = rec.seq
    return ev


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

    def disarm(self) -> None:
        """Forget the armed faults that have not fired yet."""
        self._at.clear()
        self._until = 0.0

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
    """Writes the records of a group of steps in one transaction.

    :meth:`write` (thread-safe: run it off the loop) records them; after it
    succeeded, :meth:`applied` makes the events visible to watchers and retires
    finished campaigns; after it failed, :meth:`rollback` puts memory back as it was
    before the group. Acknowledging, answering and sending what depends on the
    records is the caller's, after :meth:`applied`.
    """

    def __init__(
        self, store: Store, live: dict[str, Live], faults: CommitFaults | None = None
    ) -> None:
        self.store = store
        self.faults = faults
        self.live = live  # campaigns being driven: a finished one leaves it on commit
        self.txs: list[tuple[Transaction, bool]] = []
        self.before: list[Callable[[sqlite3.Connection], None]] = []
        self.events: list[tuple[CampaignRun, common_pb2.Event]] = []

    def add(self, tx: Transaction, *, undo: bool = True) -> None:
        """Take a step's records (``undo=False``: a new campaign's, which nobody
        sees before they are committed, so there is nothing to roll back)."""
        self.txs.append((tx, undo))

    def write(self) -> None:
        """Record everything in one transaction; memory is not touched."""
        records = [(run, rec) for tx, _ in self.txs for run, rec in tx.records]
        if not records and not self.before:
            return
        events = [(run, to_event(rec)) for run, rec in records]
        rows: dict[tuple[str, str], tuple[CampaignRun, ActivityRow]] = {}
        for tx, _ in self.txs:
            rows.update(tx.rows)
        finished = [run for tx, _ in self.txs for run in tx.finished]
        finished_ms = now_ms()
        with self.store.tx() as db:
            for before in self.before:
                before(db)
            cstore.append_events(db, [ev for _, ev in events])
            cstore.save_activities(db, [(run.id, row) for run, row in rows.values()])
            for run in finished:
                cstore.finish_campaign(db, run.id, run.state, run.message, finished_ms)
            if self.faults is not None:
                self.faults.check()
        self.events = events

    def rollback(self) -> None:
        """After a failed :meth:`write`: memory as it was before the group."""
        for tx, undo in reversed(self.txs):
            if undo:
                tx.rollback()
        self.txs.clear()

    def applied(self) -> None:
        """After :meth:`write` succeeded: watchers see the events, finished
        campaigns leave :attr:`live`."""
        touched: dict[int, Live] = {}
        for run, ev in self.events:
            assert isinstance(run, Live)
            run.remember(ev)
            touched[id(run)] = run
        for live in touched.values():
            live.notify()
        for tx, _ in self.txs:
            for run in tx.finished:
                assert isinstance(run, Live)
                run.ended = True
                self.live.pop(run.id, None)
                log_event(log, "campaign.finished", campaign=run.id, state=run.state)
        self.txs.clear()
        self.events = []
