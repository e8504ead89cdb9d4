"""Activity states, the allowed transitions between them, and the wire mapping.

States are plain upper-case strings (``"PENDING"``, ``"RUNNING"``, ...) so that they
journal and print without ceremony; :func:`to_proto` / :func:`from_proto` convert
them to and from ``common_pb2.ActivityState`` at the edge.
"""

from __future__ import annotations

from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.v1 import common_pb2

PENDING = "PENDING"
READY = "READY"
BIDDING = "BIDDING"
AWARDED = "AWARDED"
QUEUED = "QUEUED"
STAGING = "STAGING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
RETRYING = "RETRYING"
SKIPPED = "SKIPPED"

#: Every activity state, in life-cycle order.
STATES: tuple[str, ...] = (
    PENDING,
    READY,
    BIDDING,
    AWARDED,
    QUEUED,
    STAGING,
    RUNNING,
    SUCCEEDED,
    FAILED,
    CANCELLED,
    RETRYING,
    SKIPPED,
)

#: States an activity never leaves.
TERMINAL: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED, SKIPPED})

#: States in which an attempt is placed on (or running at) a contractor.
PLACED: frozenset[str] = frozenset({AWARDED, QUEUED, STAGING, RUNNING})

_ENDINGS = frozenset({FAILED, CANCELLED, RETRYING})

# The execution phase moves forward only; a contractor may skip steps (no inputs
# to stage, no batch queue), so any later state in this order is allowed.
_EXECUTION_ORDER = (AWARDED, STAGING, QUEUED, RUNNING, SUCCEEDED)


def _forward(state: str) -> frozenset[str]:
    idx = _EXECUTION_ORDER.index(state)
    return frozenset(_EXECUTION_ORDER[idx + 1 :]) | _ENDINGS


_ALLOWED: dict[str, frozenset[str]] = {
    # Ready activities are offered at once (BIDDING); READY is for those waiting for room.
    PENDING: frozenset({READY, BIDDING, FAILED, CANCELLED, SKIPPED}),
    # READY = waiting for room: offered again without leaving READY until placed.
    READY: frozenset({BIDDING, AWARDED, FAILED, CANCELLED, SKIPPED, RETRYING}),
    # A placement round may restart (READY), fail, or end in a retry.
    BIDDING: frozenset({AWARDED, READY, FAILED, CANCELLED, RETRYING}),
    AWARDED: _forward(AWARDED),
    STAGING: _forward(STAGING),
    QUEUED: _forward(QUEUED),
    RUNNING: _forward(RUNNING),
    RETRYING: frozenset({READY, BIDDING, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    SKIPPED: frozenset(),
}


class IllegalTransition(FailedPrecondition):
    """An activity was asked to move between two states that are not connected."""


def allowed_transitions(state: str) -> frozenset[str]:
    """The states an activity in ``state`` may move to next."""
    try:
        return _ALLOWED[state]
    except KeyError:
        raise InvalidInput(f"unknown activity state {state!r}") from None


def is_allowed(old: str, new: str) -> bool:
    """True when ``old -> new`` is a legal transition (both must be known states)."""
    if new not in _ALLOWED:
        raise InvalidInput(f"unknown activity state {new!r}")
    return new in allowed_transitions(old)


def check_transition(old: str, new: str) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is allowed."""
    if not is_allowed(old, new):
        raise IllegalTransition(f"illegal activity transition {old} -> {new}")


def is_terminal(state: str) -> bool:
    """True for SUCCEEDED, FAILED, CANCELLED and SKIPPED."""
    return state in TERMINAL


_PREFIX = "ACTIVITY_STATE_"


def to_proto(state: str) -> common_pb2.ActivityState.ValueType:
    """The ``common_pb2.ActivityState`` value of a state name."""
    if state not in _ALLOWED:
        raise InvalidInput(f"unknown activity state {state!r}")
    return common_pb2.ActivityState.Value(_PREFIX + state)


def from_proto(value: int) -> str:
    """The state name of a ``common_pb2.ActivityState`` value (UNSPECIFIED is refused)."""
    try:
        name = common_pb2.ActivityState.Name(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidInput(f"unknown activity state value {value}") from None
    state = name.removeprefix(_PREFIX)
    if state not in _ALLOWED:
        raise InvalidInput(f"activity state {name} is not a valid state")
    return state
