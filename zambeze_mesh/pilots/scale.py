"""The autoscaling decision for pilots: a pure function of the backlog and the pilots.

``[pilots]`` in ``config.toml`` sets ``min``, ``max``, ``nodes``, ``walltime``,
``idle_timeout``, ``labels`` (and ``backlog_wait``, the seconds a pilot-only activity
waits for room before it counts as backlog). :func:`decide` says how many pilots to
submit now; pilots leave by themselves when idle longer than ``idle_timeout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zambeze_mesh.settings.pilots import PilotPolicy


@dataclass(frozen=True)
class Decision:
    """What the autoscaler does now: submit ``submit`` pilots, and why."""

    submit: int
    reason: str


def decide(
    policy: PilotPolicy,
    *,
    waiting_s: list[float],
    pilots_up: int,
    pilots_starting: int,
) -> Decision:
    """How many pilots to submit.

    ``waiting_s``: for each activity only pilots could run, how long it has waited for
    room; those past ``backlog_wait_s`` are the backlog. ``pilots_up``: pilots in the
    mesh; ``pilots_starting``: submitted pilots not yet in the mesh. Pilots are
    submitted (never more than ``max`` in all) while there is a backlog: one per
    ``per_pilot`` backlog activities (counting those on their way), or, when
    ``per_pilot`` is 0, up to ``max`` once none is on its way; and up to ``min`` at
    any time.
    """
    total = pilots_up + pilots_starting
    room = max(0, policy.max - total)
    if total < policy.min:
        return Decision(min(room, policy.min - total), f"below min={policy.min}")
    backlog = sum(1 for w in waiting_s if w >= policy.backlog_wait_s)
    if not backlog or not room:
        return Decision(0, "no backlog" if not backlog else f"at max={policy.max}")
    if policy.per_pilot:
        want = math.ceil(backlog / policy.per_pilot) - pilots_starting
    else:
        want = 0 if pilots_starting else room
    n = max(0, min(room, want))
    if not n:
        return Decision(0, f"{pilots_starting} pilot(s) starting")
    return Decision(n, f"{backlog} activities waited over {policy.backlog_wait_s:g}s")
