"""Checks of single config values, shared by the config file and the modules that
use the values (rsync endpoints, batch schedulers and walltimes, admin identities).

Pure functions raising :class:`~zambeze_mesh.errors.InvalidInput`; they live here,
below every other package, so that validating a config imports nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from zambeze_mesh.errors import InvalidInput

__all__ = [
    "LOCAL",
    "SCHEDULERS",
    "check_admins",
    "check_host",
    "check_scheduler",
    "check_user",
    "parse_walltime",
]

#: The owner recorded for campaigns submitted over the agent's Unix socket.
LOCAL = "local"
_SPIFFE = "spiffe://"
#: Schedulers the batch plugin accepts (PSI/J executor names).
SCHEDULERS = ("slurm", "lsf", "pbs", "flux", "cobalt", "local")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.%]{2,64}")


def check_user(user: str) -> str:
    """A plain login name (never starting with ``-``); raises :class:`InvalidInput`."""
    if not _USER_RE.fullmatch(user):
        raise InvalidInput(f"bad rsync user {user[:80]!r}")
    return user


def check_host(host: str) -> str:
    """A host name or IP literal (never an ssh option); raises :class:`InvalidInput`."""
    if not _HOST_RE.fullmatch(host):
        raise InvalidInput(f"bad rsync host {host[:80]!r}")
    return host


_WALL = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_walltime(text: str) -> timedelta | None:
    """Slurm-style walltime: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``; "" → None."""
    text = text.strip()
    if not text:
        return None
    m = _WALL.match(text)
    if not m:
        raise InvalidInput(f"walltime {text!r} is not MM, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:
        h, mi, s = [*nums, 0, 0][:3]
        total = timedelta(days=int(days), hours=h, minutes=mi, seconds=s)
    elif len(nums) == 1:
        total = timedelta(minutes=nums[0])
    elif len(nums) == 2:
        total = timedelta(minutes=nums[0], seconds=nums[1])
    else:
        total = timedelta(hours=nums[0], minutes=nums[1], seconds=nums[2])
    if total <= timedelta(0):
        raise InvalidInput(f"walltime {text!r} must be positive")
    return total


def check_scheduler(name: str) -> None:
    """Raise InvalidInput for a scheduler name PSI/J does not know."""
    if name and name not in SCHEDULERS:
        raise InvalidInput(f"scheduler {name!r} is not one of {', '.join(SCHEDULERS)}")


def check_admins(admins: Iterable[object]) -> list[str]:
    """Validate the ``admins`` config list: SPIFFE IDs or ``"local"``."""
    out = []
    for a in admins:
        if not isinstance(a, str) or not (a == LOCAL or a.startswith(_SPIFFE)) or len(a) > 512:
            raise InvalidInput(f"admins: {a!r} is not a SPIFFE ID (spiffe://<mesh>/<role>/<name>)")
        out.append(a)
    return out
