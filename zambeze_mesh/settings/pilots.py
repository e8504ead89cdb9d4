"""The ``[pilots]`` table of an agent config: how many pilot jobs, of what shape.

``min``, ``max``, ``nodes``, ``slots``, ``walltime``, ``idle_timeout``, ``labels``,
``per_pilot`` and ``backlog_wait`` (the seconds a pilot-only activity waits for room
before it counts as backlog). The decision that uses it is
:func:`zambeze_mesh.pilots.scale.decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.settings.checks import parse_walltime

__all__ = ["PilotPolicy"]


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
