"""The autoscaling decision for pilots: a pure function of the backlog and the pilots.

``[pilots]`` in ``config.toml`` sets ``min``, ``max``, ``nodes``, ``walltime``,
``idle_timeout``, ``labels`` (and ``backlog_wait``, the seconds a pilot-only activity
waits for room before it counts as backlog). :func:`decide` says how many pilots to
submit now; pilots leave by themselves when idle longer than ``idle_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.batch_spec import parse_walltime


@dataclass(frozen=True)
class PilotPolicy:
    """The ``[pilots]`` table of an agent config, validated."""

    min: int = 0
    max: int = 0
    nodes: int = 1
    slots: int = 0
    walltime: str = "30"
    idle_timeout_s: float = 60.0
    backlog_wait_s: float = 5.0
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Per-activity parallel pilots: one pilot per this many waiting activities.
    per_pilot: int = 0

    @classmethod
    def from_table(cls, raw: Mapping[str, Any]) -> PilotPolicy:
        """Build from the ``[pilots]`` table; unknown keys and bad values are refused."""
        known = {
            "min",
            "max",
            "nodes",
            "slots",
            "walltime",
            "idle_timeout",
            "backlog_wait",
            "labels",
            "per_pilot",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"unknown keys in [pilots]: {', '.join(unknown)}")
        labels = raw.get("labels", {})
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise InvalidInput("[pilots] labels must be a table of strings")
        ints: dict[str, int] = {}
        for key, lo, hi, default in (
            ("min", 0, 1000, 0),
            ("max", 0, 1000, 0),
            ("nodes", 1, 100000, 1),
            ("slots", 0, 4096, 0),
            ("per_pilot", 0, 1_000_000, 0),
        ):
            v = raw.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise InvalidInput(f"[pilots] {key} must be an integer between {lo} and {hi}")
            ints[key] = v
        if ints["min"] > ints["max"]:
            raise InvalidInput("[pilots] min must not exceed max")
        walltime = str(raw.get("walltime", "30"))
        parse_walltime(walltime)
        floats: dict[str, float] = {}
        for key, fdefault in (("idle_timeout", 60.0), ("backlog_wait", 5.0)):
            fv = raw.get(key, fdefault)
            if isinstance(fv, bool) or not isinstance(fv, int | float) or not 0 <= fv <= 86400:
                raise InvalidInput(f"[pilots] {key} must be seconds between 0 and 86400")
            floats[key] = float(fv)
        return cls(
            min=ints["min"],
            max=ints["max"],
            nodes=ints["nodes"],
            slots=ints["slots"],
            walltime=walltime,
            idle_timeout_s=floats["idle_timeout"],
            backlog_wait_s=floats["backlog_wait"],
            labels=dict(labels),
            per_pilot=ints["per_pilot"],
        )


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
