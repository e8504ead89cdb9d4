"""The contractor's jobs: their states, the legal moves between them, and the typed
inputs and effects of :class:`~zambeze_mesh.control.contractor.ContractorMachine`.

A *job* is one accepted attempt, keyed ``(monitor, attempt key)``; the attempt key
names ``(campaign_id, activity, attempt)`` (``scheduling.TenderKey`` fits
:class:`AttemptKey`). Its life here::

    ACCEPTED --Persisted--> QUEUED --a slot is free--> RUNNING --Finished--> DONE
       |                    ^    |                        |                  ^
       | PersistFailed      |    | another attempt of     | cancel, hand     |
       v (no event)         |    v its activity runs      v back, close      |
      DONE                  +--- HELD                  STOPPING --Finished---+
                         it ended
    QUEUED, HELD --cancel, hand back--> DONE (its final event at once)

Pure data: no asyncio, grpc, sqlite3 or networkx (see :mod:`zambeze_mesh.control`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

# The activity states a contractor puts in its events. They are the values of
# ``zambeze_mesh.scheduling.states`` (a test checks that they match); they are spelled
# here so that importing the machine does not load the scheduling package.
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
#: Activity states that end an attempt (what a :class:`Finished` may report).
FINAL_STATES: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED})


class AttemptKey(Protocol):
    """One attempt of one activity of one campaign (``scheduling.TenderKey`` fits)."""

    @property
    def campaign_id(self) -> str: ...

    @property
    def activity(self) -> str: ...

    @property
    def attempt(self) -> int: ...


JobKey = tuple[str, AttemptKey]
"""A contractor job's key: ``(monitor, attempt key)``."""


class JobState(enum.StrEnum):
    """Where a job is in its life at this contractor."""

    ACCEPTED = "ACCEPTED"  # accepted in an award; its contract is not yet durable
    QUEUED = "QUEUED"  # waiting for a free slot
    HELD = "HELD"  # waiting for another attempt of its activity to end
    RUNNING = "RUNNING"  # holds a slot: staging, running, digesting its outputs
    STOPPING = "STOPPING"  # holds a slot; told to stop (cancel, hand back, close)
    DONE = "DONE"  # its final event is emitted (or its award was abandoned)


#: The legal moves of a job; anything else is a bug (see ``ContractorConfig.strict``).
ALLOWED: Mapping[JobState, frozenset[JobState]] = {
    JobState.ACCEPTED: frozenset({JobState.QUEUED, JobState.DONE}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.HELD, JobState.DONE}),
    JobState.HELD: frozenset({JobState.QUEUED, JobState.DONE}),
    JobState.RUNNING: frozenset({JobState.STOPPING, JobState.DONE}),
    JobState.STOPPING: frozenset({JobState.DONE}),
    JobState.DONE: frozenset(),
}

#: States that hold one of the contractor's slots.
HOLDS_SLOT: frozenset[JobState] = frozenset({JobState.RUNNING, JobState.STOPPING})

Gate = Callable[[float, int, int, int], "str | None"]
"""An admission gate: (expected run time, queued, free slots, slots) -> why to refuse,
or None to take the work (a pilot's drain policy)."""


@dataclass(frozen=True)
class ContractorConfig:
    """Fixed parameters of a contractor."""

    slots: int
    #: Most jobs held at once (0: ``slots * queue_per_slot``).
    max_queued: int = 0
    queue_per_slot: int = 512
    #: A service interval older than this is not used: the load it measured is gone.
    service_memory_s: float = 30.0
    #: Succeeded job keys remembered, so a duplicate award never runs one again.
    remember_succeeded: int = 65536
    #: Raise :class:`IllegalJobTransition` on an illegal move (tests); otherwise it is
    #: logged and refused.
    strict: bool = False

    @property
    def limit(self) -> int:
        """Most jobs accepted at once."""
        return self.max_queued or self.slots * self.queue_per_slot


class IllegalJobTransition(RuntimeError):
    """A job was asked to make a move that :data:`ALLOWED` does not have."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class AwardItem:
    """One awarded attempt, already parsed and checked by the shell.

    ``named_monitor``: the monitor the item names ('' = none); ``plugin``: the
    activity's plugin (its run-time history), ``label`` what final events name as
    the plugin when none ran; ``refusal``: why the shell's parsing or execution
    policy refuses it (None: acceptable)."""

    key: AttemptKey
    plugin: str = ""
    label: str = ""
    named_monitor: str = ""
    refusal: str | None = None


@dataclass(frozen=True)
class Awarded:
    """A monitor awards attempts; the effects carry one decision per item."""

    monitor: str
    items: tuple[AwardItem, ...]


@dataclass(frozen=True)
class Persisted:
    """The contracts of these accepted jobs are durable: they may run."""

    jobs: tuple[JobKey, ...]


@dataclass(frozen=True)
class PersistFailed:
    """Writing these jobs' contracts failed: forget them (the award call fails)."""

    jobs: tuple[JobKey, ...]


@dataclass(frozen=True)
class Started:
    """A running job's plugin is about to run (so it can be killed from now on)."""

    job: JobKey
    plugin: str


@dataclass(frozen=True)
class Progress:
    """A running job reports a non-final state (STAGING, RUNNING...)."""

    job: JobKey
    state: str
    message: str = ""
    detail: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """A running job's run ended with this outcome.

    ``detail``: the outcome's own detail (exit code, output tails...), replaced when
    the job was stopped; ``context``: what every final event carries (plugin,
    inputs read); ``elapsed``: the plugin's run time, None when no plugin ran."""

    job: JobKey
    state: str
    message: str = ""
    detail: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, str] = field(default_factory=dict)
    result: bytes = b""
    elapsed: float | None = None


@dataclass(frozen=True)
class CancelRequested:
    """``monitor`` cancels attempts: each ref is (campaign, activity, attempt); attempt
    0 is any attempt. Other monitors' jobs are never touched."""

    monitor: str
    refs: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class HandBack:
    """Give an accepted attempt back to its monitor (a pilot before its walltime)."""

    job: JobKey
    reason: str


@dataclass(frozen=True)
class MarkHandedBack:
    """Every accepted attempt reports as handed back however it ends."""

    reason: str


@dataclass(frozen=True)
class Lost:
    """Attempts accepted before a restart whose runs are gone: they fail."""

    jobs: tuple[JobKey, ...]


@dataclass(frozen=True)
class Close:
    """The contractor shuts down: refuse new work, stop running jobs."""


@dataclass(frozen=True)
class Tick:
    """A timer: report the free capacity."""


Input = (
    Awarded
    | Persisted
    | PersistFailed
    | Started
    | Progress
    | Finished
    | CancelRequested
    | HandBack
    | MarkHandedBack
    | Lost
    | Close
    | Tick
)

# --------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Decision:
    """The answer to one award item."""

    key: AttemptKey
    accepted: bool
    reason: str = ""


@dataclass(frozen=True)
class Persist:
    """Write the contracts of these newly accepted jobs (one transaction), then step
    :class:`Persisted` (or :class:`PersistFailed`)."""

    jobs: tuple[JobKey, ...]


@dataclass(frozen=True)
class Start:
    """Run this job (it holds a slot until its :class:`Finished`)."""

    job: JobKey


@dataclass(frozen=True)
class Kill:
    """Stop this job's running plugin (``plugin`` as given by :class:`Started`)."""

    job: JobKey
    plugin: str


@dataclass(frozen=True)
class Emit:
    """Send an event to the job's monitor through the outbox; ``final`` closes the
    contract (exactly one final event per job)."""

    job: JobKey
    state: str
    message: str = ""
    detail: Mapping[str, str] = field(default_factory=dict)
    result: bytes = b""
    final: bool = False


@dataclass(frozen=True)
class Load:
    """Capacity to advertise: free slots minus queued work (never below 0)."""

    free: int


Effect = Persist | Start | Kill | Emit | Load
E = TypeVar("E", Persist, Start, Kill, Emit, Load)


@dataclass
class Effects:
    """What the shell must do after one step, in order; plus the step's answers."""

    effects: list[Effect] = field(default_factory=list)
    #: Awarded: one decision per item, in order.
    decisions: list[Decision] = field(default_factory=list)
    #: CancelRequested: jobs matched; HandBack: 1 when handed back.
    matched: int = 0

    def of(self, kind: type[E]) -> list[E]:
        """The effects of one kind, in order."""
        return [e for e in self.effects if isinstance(e, kind)]
