"""The drain policy of a pilot: pure functions of time left, service times and queue.

A pilot must be gone before its walltime. It takes an activity only when that activity
(after the ones queued ahead of it) is expected to finish ``margin_s`` before the end;
work that will not finish is handed back to its monitor (which re-awards it without
counting a failure); and the pilot leaves when it must, when it was asked to drain and
has nothing left, or when it has been idle for ``idle_timeout_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Seconds before the walltime by which a pilot has handed back its work and left.
DEFAULT_MARGIN_S = 15.0


@dataclass(frozen=True)
class Running:
    """One activity a pilot runs: how long it has run and how long such runs take."""

    key: object
    elapsed_s: float
    expected_s: float


def finish_in(runtime_s: float, queue_len: int, free_slots: int, slots: int) -> float:
    """Seconds until one more activity of ``runtime_s`` would be done here."""
    ahead = max(0, queue_len - free_slots + 1)
    return ahead * runtime_s / max(1, slots) + runtime_s


def may_take(
    time_left_s: float,
    runtime_s: float,
    *,
    queue_len: int = 0,
    free_slots: int = 1,
    slots: int = 1,
    margin_s: float = DEFAULT_MARGIN_S,
    draining: bool = False,
) -> str | None:
    """None when the pilot may take one more activity, else why not (a refusal reason).

    ``runtime_s`` is the measured service time of such activities (0 when unknown:
    as many as there are free slots are taken, and handed back if they turn out too
    long).
    """
    if draining:
        return "pilot is draining"
    if not math.isfinite(time_left_s):
        return None
    if runtime_s <= 0 and queue_len >= free_slots:
        return "pilot has no measured run time yet: not queueing beyond its free slots"
    done = finish_in(max(0.0, runtime_s), queue_len, free_slots, slots)
    if done + margin_s > time_left_s:
        return f"pilot ends in {max(0.0, time_left_s):.0f}s, sooner than this activity would finish"
    return None


def hand_back(
    time_left_s: float, running: list[Running], *, margin_s: float = DEFAULT_MARGIN_S
) -> list[object]:
    """Keys of running activities that will not finish ``margin_s`` before the end.

    Once the margin is reached everything still running is handed back; before that,
    an activity is handed back when its expected remaining time (``expected_s -
    elapsed_s``; unknown expectations count as already due) exceeds the time left.
    """
    if not math.isfinite(time_left_s):
        return []
    room = time_left_s - margin_s
    out = []
    for r in running:
        remaining = max(0.0, r.expected_s - r.elapsed_s)
        if room <= 0 or remaining > room:
            out.append(r.key)
    return out


def leave_reason(
    time_left_s: float,
    *,
    busy: bool,
    idle_s: float,
    runtime_s: float = 0.0,
    idle_timeout_s: float = 0.0,
    draining: bool = False,
    margin_s: float = DEFAULT_MARGIN_S,
) -> str | None:
    """Why the pilot should leave now (``walltime``, ``drained``, ``idle``), or None.

    An idle pilot also leaves (``walltime``) once an activity of ``runtime_s`` (the
    measured service time, when known) would no longer fit before the end.
    """
    if math.isfinite(time_left_s) and time_left_s <= margin_s:
        return "walltime"
    if busy:
        return None
    if runtime_s > 0 and math.isfinite(time_left_s) and time_left_s - margin_s < runtime_s:
        return "walltime"
    if draining:
        return "drained"
    if idle_timeout_s > 0 and idle_s >= idle_timeout_s:
        return "idle"
    return None


def queued_to_hand_back(
    time_left_s: float,
    queued: list[object],
    *,
    runtime_s: float,
    slots: int,
    margin_s: float = DEFAULT_MARGIN_S,
) -> list[object]:
    """Accepted activities waiting in the queue (in order) that would not finish in time.

    The i-th waits for ``i // slots`` rounds of ``runtime_s`` plus its own run; when no
    run time is known only the margin is checked.
    """
    if not math.isfinite(time_left_s):
        return []
    room = time_left_s - margin_s
    out = []
    for i, key in enumerate(queued):
        finish = (i // max(1, slots) + 1) * max(0.0, runtime_s)
        if room <= 0 or finish > room:
            out.append(key)
    return out
