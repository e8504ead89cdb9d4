"""The client's view of one campaign, built from its events (no I/O, thread-safe).

The watcher applies events in ``seq`` order; readers take immutable snapshots.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from zambeze_mesh.campaign.wire import (
    FINAL_ACTIVITY_STATES,
    FINAL_CAMPAIGN_STATES,
    CampaignStatus,
    Event,
    activity_state_name,
    campaign_state_name,
)
from zambeze_mesh.v1 import common_pb2

__all__ = ["ActivityRow", "CampaignSnapshot", "Tracker"]


@dataclass(frozen=True)
class ActivityRow:
    """Latest known state of one activity."""

    name: str
    state: str = "PENDING"
    attempt: int = 0
    agent: str = ""
    message: str = ""
    time_unix_ms: int = 0
    detail: Mapping[str, str] = field(default_factory=dict)
    result: bytes = b""

    @property
    def final(self) -> bool:
        """True once the activity reached SUCCEEDED, FAILED, CANCELLED or SKIPPED."""
        return self.state in FINAL_ACTIVITY_STATES


@dataclass(frozen=True)
class CampaignSnapshot:
    """An immutable copy of the tracker's state, for views and ``poll()``."""

    name: str
    campaign_id: str
    state: str
    message: str
    last_seq: int
    rows: tuple[ActivityRow, ...]
    started_unix_ms: int = 0
    finished_unix_ms: int = 0  # when the campaign reached its final state (0 before)

    @property
    def final(self) -> bool:
        """True once the campaign ended."""
        return self.state in FINAL_CAMPAIGN_STATES

    @property
    def states(self) -> dict[str, str]:
        """Activity name -> state."""
        return {r.name: r.state for r in self.rows}


class Tracker:
    """Keeps the latest state per activity and of the campaign."""

    def __init__(self, name: str, activity_names: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self.name = name
        self.campaign_id = ""
        self.state = "PENDING"
        self.message = ""
        self.last_seq = 0
        self.started_unix_ms = 0
        self.finished_unix_ms = 0
        self._rows: dict[str, ActivityRow] = {n: ActivityRow(n) for n in activity_names}

    def add(self, name: str) -> None:
        """Track one more activity (state PENDING)."""
        with self._lock:
            self._rows.setdefault(name, ActivityRow(name))

    def submitted(self, campaign_id: str) -> None:
        """The campaign was accepted by the mesh."""
        with self._lock:
            self.campaign_id = campaign_id
            self.state = "RUNNING"

    def load(self, status: CampaignStatus) -> None:
        """Rebuild from a ``Get`` result (used by ``Campaign.attach``); events then replay."""
        with self._lock:
            self.campaign_id = status.campaign_id
            self.name = status.name
            self.state = status.state
            self.message = status.message
            self.started_unix_ms = status.created_unix_ms
            self.finished_unix_ms = status.finished_unix_ms
            for a in status.activities:
                self._rows[a.name] = ActivityRow(
                    a.name, a.state, a.attempt, a.agent, a.message, 0, dict(a.detail), a.result
                )

    def apply(self, ev: Event) -> ActivityRow | None:
        """Apply one event; returns the activity's row when this event made it final."""
        with self._lock:
            return self._apply(
                ev.seq, ev.time_unix_ms, ev.activity, ev.state, ev.campaign_state,
                ev.attempt, ev.agent, ev.message, ev.detail, ev.result,
            )  # fmt: skip

    def apply_wire(self, events: Iterable[common_pb2.Event]) -> list[ActivityRow]:
        """Apply wire events in order (one lock, no per-event objects built);
        returns the rows they made final."""
        done = []
        with self._lock:
            for pb in events:
                row = self._apply(
                    pb.seq,
                    pb.time_unix_ms,
                    pb.activity,
                    activity_state_name(pb.state) if pb.state else "",
                    campaign_state_name(pb.campaign_state) if pb.campaign_state else "",
                    pb.attempt,
                    pb.agent,
                    pb.message,
                    pb.detail,
                    pb.result,
                )
                if row is not None:
                    done.append(row)
        return done

    def _apply(
        self,
        seq: int,
        time_unix_ms: int,
        activity: str,
        state: str,
        campaign_state: str,
        attempt: int,
        agent: str,
        message: str,
        detail: Mapping[str, str],
        result: bytes,
    ) -> ActivityRow | None:
        self.last_seq = max(self.last_seq, seq)
        if not self.started_unix_ms and time_unix_ms:
            self.started_unix_ms = time_unix_ms
        if not activity:
            if campaign_state:
                self.state = campaign_state
                if campaign_state in FINAL_CAMPAIGN_STATES and time_unix_ms:
                    self.finished_unix_ms = self.finished_unix_ms or time_unix_ms
            self.message = message
            return None
        old = self._rows.get(activity)
        if old is None:
            old = ActivityRow(activity)
        row = ActivityRow(  # positional: several times cheaper than replace()
            old.name,
            state or old.state,
            attempt or old.attempt,
            agent or old.agent,
            message,
            time_unix_ms or old.time_unix_ms,
            dict(detail) if detail else old.detail,
            result or old.result,
        )
        self._rows[activity] = row
        return row if row.final and not old.final else None

    def snapshot(self) -> CampaignSnapshot:
        """An immutable copy of the current state."""
        with self._lock:
            return CampaignSnapshot(
                name=self.name,
                campaign_id=self.campaign_id,
                state=self.state,
                message=self.message,
                last_seq=self.last_seq,
                rows=tuple(self._rows.values()),
                started_unix_ms=self.started_unix_ms,
                finished_unix_ms=self.finished_unix_ms,
            )
