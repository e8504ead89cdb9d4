"""Activity and campaign states, and the activity transition table.

The states are :class:`enum.StrEnum` members whose values are the upper-case names
the journal has always stored (``"PENDING"``, ``"RUNNING"``, ...), so they compare
equal to those strings; they match ``common.proto``'s ``ActivityState`` and
``CampaignState`` (``ACTIVITY_STATE_<name>``, ``CAMPAIGN_STATE_<name>``).
"""

from __future__ import annotations

from enum import StrEnum


class ActivityState(StrEnum):
    """The life cycle of one activity (see ``common.proto``)."""

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


class CampaignState(StrEnum):
    """The life cycle of a campaign: RUNNING, then exactly one final state."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


A = ActivityState

#: States an activity never leaves.
TERMINAL: frozenset[ActivityState] = frozenset({A.SUCCEEDED, A.FAILED, A.CANCELLED, A.SKIPPED})

#: States in which an attempt is placed on (or running at) a contractor.
PLACED: frozenset[ActivityState] = frozenset({A.AWARDED, A.QUEUED, A.STAGING, A.RUNNING})

_ENDINGS = frozenset({A.FAILED, A.CANCELLED, A.RETRYING})

# The execution phase moves forward only; a contractor may skip steps (no inputs
# to stage, no batch queue), so any later state in this order is allowed.
_EXECUTION_ORDER = (A.AWARDED, A.STAGING, A.QUEUED, A.RUNNING, A.SUCCEEDED)


def _forward(state: ActivityState) -> frozenset[ActivityState]:
    idx = _EXECUTION_ORDER.index(state)
    return frozenset(_EXECUTION_ORDER[idx + 1 :]) | _ENDINGS


#: old state -> the states it may move to. Nothing else is journaled: the monitor
#: refuses (and in strict mode raises on) any other transition.
ALLOWED: dict[ActivityState, frozenset[ActivityState]] = {
    # Ready activities are offered at once (BIDDING); READY is for those waiting for room.
    A.PENDING: frozenset({A.READY, A.BIDDING, A.FAILED, A.CANCELLED, A.SKIPPED}),
    # READY = waiting for room: offered again without leaving READY until placed.
    A.READY: frozenset({A.BIDDING, A.AWARDED, A.FAILED, A.CANCELLED, A.SKIPPED, A.RETRYING}),
    # A placement round may restart (READY), fail, or end in a retry.
    A.BIDDING: frozenset({A.AWARDED, A.READY, A.FAILED, A.CANCELLED, A.RETRYING}),
    A.AWARDED: _forward(A.AWARDED),
    # STAGING repeats: one event per input fetched.
    A.STAGING: _forward(A.STAGING) | {A.STAGING},
    A.QUEUED: _forward(A.QUEUED),
    A.RUNNING: _forward(A.RUNNING),
    A.RETRYING: frozenset({A.READY, A.BIDDING, A.FAILED, A.CANCELLED}),
    A.SUCCEEDED: frozenset(),
    A.FAILED: frozenset(),
    A.CANCELLED: frozenset(),
    A.SKIPPED: frozenset(),
}


def is_allowed(old: str, new: str) -> bool:
    """True when ``old -> new`` is in :data:`ALLOWED` (False for unknown states)."""
    try:
        return ActivityState(new) in ALLOWED[ActivityState(old)]
    except ValueError:
        return False
