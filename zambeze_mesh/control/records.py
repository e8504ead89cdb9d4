"""A campaign's state as the monitor keeps it, and the records one step makes of it.

:class:`ActivityRow` is the monitor's view of one activity (also the journal's row
type); :class:`CampaignRun` one campaign being driven. A :class:`Transaction` collects
one step's transitions as records with gap-free per-campaign sequence numbers,
enforces the transition table, and keeps what each transition replaced, so a step
whose records could not be committed is rolled back exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from zambeze_mesh.control.graph import Graph
from zambeze_mesh.control.states import TERMINAL, ActivityState, CampaignState, is_allowed

log = logging.getLogger("zambeze_mesh.monitor")


class IllegalTransitionError(Exception):
    """A step tried an activity transition outside the table (a bug)."""


@dataclass
class ActivityRow:
    """The monitor's current view of one activity."""

    name: str
    state: str
    attempt: int = 1
    agent: str = ""
    message: str = ""
    detail: dict[str, str] = field(default_factory=dict)
    result: bytes = b""
    infra_retries: int = 0


@dataclass
class CampaignRun:
    """One campaign being driven: its graph, activities and sequence number."""

    id: str
    name: str
    graph: Graph
    acts: dict[str, ActivityRow]
    seq: int
    state: str = CampaignState.RUNNING
    message: str = ""
    created_ms: int = 0
    owner: str = ""  # who submitted it (security.owners); "" for campaigns from before
    open: int = -1  # activities not yet in a terminal state

    def __post_init__(self) -> None:
        if self.open < 0:
            self.open = sum(1 for a in self.acts.values() if a.state not in TERMINAL)

    def states(self) -> Mapping[str, str]:
        """Activity name -> state, as a live O(1) view (no copy)."""
        return _StateView(self.acts)


class _StateView(Mapping[str, str]):
    """A read-only mapping name -> state over the activity rows."""

    __slots__ = ("_rows",)

    def __init__(self, rows: dict[str, ActivityRow]) -> None:
        self._rows = rows

    def __getitem__(self, key: str) -> str:
        return self._rows[key].state

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


@dataclass(frozen=True)
class ActivityRecord:
    """An activity's transition, as journaled and streamed (seq is per campaign)."""

    campaign_id: str
    seq: int
    activity: str
    state: ActivityState
    attempt: int
    agent: str
    message: str = ""
    detail: tuple[tuple[str, str], ...] = ()
    result: bytes = b""


@dataclass(frozen=True)
class CampaignRecord:
    """A campaign's transition."""

    campaign_id: str
    seq: int
    state: CampaignState
    message: str = ""


Record = ActivityRecord | CampaignRecord


class Transaction:
    """One step's records, with the transition table enforced and an undo log."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.records: list[tuple[CampaignRun, Record]] = []
        #: Rows to save: (campaign id, name) -> (campaign, row).
        self.rows: dict[tuple[str, str], tuple[CampaignRun, ActivityRow]] = {}
        #: Campaigns this step ended.
        self.finished: list[CampaignRun] = []
        self._rows_before: dict[tuple[str, str], tuple[ActivityRow, ActivityRow]] = {}
        self._run_before: dict[str, tuple[CampaignRun, tuple[int, int, str, str]]] = {}

    def touch(self, run: CampaignRun, name: str) -> ActivityRow:
        """The activity's row, remembered as it is for :meth:`rollback`."""
        row = run.acts[name]
        key = (run.id, name)
        if key not in self._rows_before:
            self._rows_before[key] = (row, replace(row, detail=dict(row.detail)))
        self._touch_run(run)
        return row

    def _touch_run(self, run: CampaignRun) -> None:
        if run.id not in self._run_before:
            self._run_before[run.id] = (run, (run.seq, run.open, run.state, run.message))

    def activity(
        self,
        run: CampaignRun,
        name: str,
        state: ActivityState,
        *,
        message: str = "",
        detail: dict[str, str] | None = None,
        result: bytes = b"",
        agent: str | None = None,
        attempt: int | None = None,
        infra_retries: int | None = None,
    ) -> bool:
        """Record an activity's transition (True), or refuse an illegal one (False;
        :class:`IllegalTransitionError` when strict)."""
        old = run.acts[name].state
        if not is_allowed(old, state):
            text = f"{run.id}/{name}: illegal transition {old} -> {state}"
            if self.strict:
                raise IllegalTransitionError(text)
            log.error("refused %s", text)
            return False
        row = self.touch(run, name)
        if state in TERMINAL and row.state not in TERMINAL:
            run.open -= 1
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
        run.seq += 1
        rec = ActivityRecord(
            run.id,
            run.seq,
            name,
            ActivityState(state),
            row.attempt,
            row.agent,
            message,
            tuple(sorted((detail or {}).items())),
            result,
        )
        self.records.append((run, rec))
        self.rows[(run.id, name)] = (run, row)
        return True

    def campaign(self, run: CampaignRun, state: CampaignState, message: str = "") -> None:
        """Record a campaign's transition."""
        self._touch_run(run)
        run.state = state
        run.message = message
        run.seq += 1
        self.records.append((run, CampaignRecord(run.id, run.seq, state, message)))
        if state != CampaignState.RUNNING:
            self.finished.append(run)

    def rollback(self) -> None:
        """Memory as it was before this step (its records could not be committed)."""
        for row, old in self._rows_before.values():
            row.state, row.attempt, row.agent = old.state, old.attempt, old.agent
            row.message, row.detail, row.result = old.message, old.detail, old.result
            row.infra_retries = old.infra_retries
        for run, (seq, open_, state, message) in self._run_before.values():
            run.seq, run.open, run.state, run.message = seq, open_, state, message
        self._rows_before.clear()
        self._run_before.clear()

    def __bool__(self) -> bool:
        return bool(self.records)
