"""The campaign journal: live campaign state and the transaction that records it.

:class:`Journal` collects transitions (activity and campaign events, with gap-free
per-campaign sequence numbers) and writes them in one SQLite transaction; only then
are they visible to watchers (:attr:`Live.recent`) and acted upon by the monitor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from zambeze_mesh.agent.campaign_wire import event, now_ms
from zambeze_mesh.control.states import CampaignState, is_allowed
from zambeze_mesh.scheduling import CampaignDag
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.scheduling.states import IllegalTransition
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
STRICT_TRANSITIONS = os.environ.get("ZMESH_STRICT_TRANSITIONS", "") == "1"


@dataclass
class Live:
    """A campaign being driven by this monitor."""

    id: str
    name: str
    dag: CampaignDag
    acts: dict[str, cstore.ActivityRow]
    seq: int
    state: str = CampaignState.RUNNING
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
    #: True once its final event is committed (``state`` changes a moment earlier,
    #: while the step that ends it is being written).
    ended: bool = False

    def __post_init__(self) -> None:
        if self.open < 0:
            self.open = sum(1 for a in self.acts.values() if a.state not in st.TERMINAL)
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
    """Collects one step's transitions; :meth:`write` records them in one transaction.

    Recording a transition updates the campaign in memory at once (the step's later
    decisions read it) but keeps what it replaced: after a failed :meth:`write`,
    :meth:`rollback` puts memory back exactly as it was before the step, and the step
    can be taken again. Only after :meth:`write` succeeded does :meth:`applied` make
    the events visible to watchers and retire finished campaigns; acknowledging,
    answering and sending what depends on them is the caller's, after that.
    """

    def __init__(
        self, store: Store, live: dict[str, Live], faults: CommitFaults | None = None
    ) -> None:
        self.store = store
        self.faults = faults
        self.live = live  # campaigns being driven: a finished one leaves it on commit
        self.events: list[tuple[Live, common_pb2.Event]] = []
        self.rows: dict[tuple[str, str], tuple[Live, cstore.ActivityRow]] = {}
        self.finished: list[Live] = []
        self.before: list[Callable[[sqlite3.Connection], None]] = []
        # What the step replaced: rows and campaigns as they were when first touched.
        self._rows_before: dict[tuple[str, str], tuple[cstore.ActivityRow, cstore.ActivityRow]] = {}
        self._live_before: dict[str, tuple[Live, tuple[int, int, str, str]]] = {}

    def touch(self, live: Live, name: str) -> cstore.ActivityRow:
        """The activity's row, remembered as it is so :meth:`rollback` can restore it
        (call before changing a row other than through :meth:`activity`)."""
        row = live.acts[name]
        key = (live.id, name)
        if key not in self._rows_before:
            self._rows_before[key] = (row, replace(row, detail=dict(row.detail)))
        self._touch_live(live)
        return row

    def _touch_live(self, live: Live) -> None:
        if live.id not in self._live_before:
            self._live_before[live.id] = (live, (live.seq, live.open, live.state, live.message))

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
        infra_retries: int | None = None,
    ) -> bool:
        """Record an activity's transition (and its event, with the next seq).

        Only transitions of :data:`~zambeze_mesh.control.states.ALLOWED` are
        recorded: any other is a bug, which raises :class:`IllegalTransition` when
        :data:`STRICT_TRANSITIONS` is on (tests) and is logged and refused (False)
        otherwise.
        """
        old = live.acts[name].state
        if not is_allowed(old, state):
            if STRICT_TRANSITIONS:
                raise IllegalTransition(f"{live.id}/{name}: illegal transition {old} -> {state}")
            log_event(
                log,
                "activity.illegal_transition",
                level=logging.ERROR,
                campaign=live.id,
                activity=name,
                old=old,
                new=state,
            )
            return False
        row = self.touch(live, name)
        if state in st.TERMINAL and row.state not in st.TERMINAL:
            live.open -= 1
        row.state = state
        if agent is not None:
            row.agent = agent
        if attempt is not None:
            row.attempt = attempt
        if infra_retries is not None:
            row.infra_retries = infra_retries
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
        return True

    def campaign(self, live: Live, state: str, message: str = "") -> None:
        """Record a campaign's transition (and its event)."""
        self._touch_live(live)
        live.state = state
        live.message = message
        live.seq += 1
        ev = event(live.id, campaign_state=CAMPAIGN_STATES[state], message=message)
        ev.seq = live.seq
        self.events.append((live, ev))
        if state != CampaignState.RUNNING:
            self.finished.append(live)

    def merge(self, other: Journal) -> None:
        """Take ``other``'s records into this step (``other`` prepared a campaign
        nobody else sees yet, so there is nothing of it to roll back)."""
        self.before.extend(other.before)
        self.events.extend(other.events)
        self.rows.update(other.rows)
        self.finished.extend(other.finished)

    def write(self) -> None:
        """Record everything in one transaction (thread-safe: run it off the loop).

        Memory outside the store is not touched, so a failure changes nothing but
        leaves the records here for :meth:`rollback`.
        """
        if not self.events and not self.before:
            return
        finished_ms = now_ms()
        with self.store.tx() as db:
            for before in self.before:
                before(db)
            cstore.append_events(db, [ev for _, ev in self.events])
            cstore.save_activities(db, [(live.id, row) for live, row in self.rows.values()])
            for live in self.finished:
                cstore.finish_campaign(db, live.id, live.state, live.message, finished_ms)
            if self.faults is not None:
                self.faults.check()

    def rollback(self) -> None:
        """After a failed :meth:`write`: memory as it was before the step."""
        for row, old in self._rows_before.values():
            row.state, row.attempt, row.agent = old.state, old.attempt, old.agent
            row.message, row.detail, row.result = old.message, old.detail, old.result
            row.infra_retries = old.infra_retries
        for live, (seq, open_, state, message) in self._live_before.values():
            live.seq, live.open, live.state, live.message = seq, open_, state, message
        self._clear()

    def applied(self) -> None:
        """After :meth:`write` succeeded: watchers see the events, finished
        campaigns leave :attr:`live`."""
        for live, ev in self.events:
            live.remember(ev)
        touched = {id(live): live for live, _ in self.events}
        for live in touched.values():
            live.notify()
        for live in self.finished:
            live.ended = True
            self.live.pop(live.id, None)
            log_event(log, "campaign.finished", campaign=live.id, state=live.state)
        self._clear()

    def commit(self) -> None:
        """:meth:`write` then :meth:`applied`, or :meth:`rollback` and raise."""
        try:
            self.write()
        except BaseException:
            self.rollback()
            raise
        self.applied()

    def _clear(self) -> None:
        self.events.clear()
        self.rows.clear()
        self.finished.clear()
        self.before.clear()
        self._rows_before.clear()
        self._live_before.clear()
