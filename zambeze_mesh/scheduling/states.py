"""Activity states, the allowed transitions between them, and the wire mapping.

States are :class:`~zambeze_mesh.control.states.ActivityState` members, whose values
are the plain upper-case strings (``"PENDING"``, ``"RUNNING"``, ...) the journal
stores; the transition table is the control plane's
(:data:`zambeze_mesh.control.states.ALLOWED`). :func:`to_proto` / :func:`from_proto`
convert them to and from ``common_pb2.ActivityState`` at the edge.
"""

from __future__ import annotations

from zambeze_mesh.control.states import ALLOWED, ActivityState
from zambeze_mesh.control.states import PLACED as _PLACED
from zambeze_mesh.control.states import TERMINAL as _TERMINAL
from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.v1 import common_pb2

PENDING = ActivityState.PENDING
READY = ActivityState.READY
BIDDING = ActivityState.BIDDING
AWARDED = ActivityState.AWARDED
QUEUED = ActivityState.QUEUED
STAGING = ActivityState.STAGING
RUNNING = ActivityState.RUNNING
SUCCEEDED = ActivityState.SUCCEEDED
FAILED = ActivityState.FAILED
CANCELLED = ActivityState.CANCELLED
RETRYING = ActivityState.RETRYING
SKIPPED = ActivityState.SKIPPED

#: Every activity state, in life-cycle order.
STATES: tuple[str, ...] = tuple(ActivityState)

#: States an activity never leaves.
TERMINAL: frozenset[str] = frozenset(_TERMINAL)

#: States in which an attempt is placed on (or running at) a contractor.
PLACED: frozenset[str] = frozenset(_PLACED)

_ALLOWED: dict[str, frozenset[str]] = {old: frozenset(new) for old, new in ALLOWED.items()}


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


def from_proto(value: int) -> ActivityState:
    """The state name of a ``common_pb2.ActivityState`` value (UNSPECIFIED is refused)."""
    try:
        name = common_pb2.ActivityState.Name(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidInput(f"unknown activity state value {value}") from None
    state = name.removeprefix(_PREFIX)
    if state not in _ALLOWED:
        raise InvalidInput(f"activity state {name} is not a valid state")
    return ActivityState(state)
