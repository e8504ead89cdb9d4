"""Plain data passed between the agent and execution plugins.

A :class:`RunRequest` says what to run and where; a plugin answers with an
:class:`Outcome`. A :class:`RunContext` carries the two hooks the agent lends a
plugin while it runs: ``emit`` (report a state change) and ``stage`` (fetch a
URI onto this machine).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from zambeze_mesh.errors import Unimplemented
from zambeze_mesh.v1 import common_pb2

if TYPE_CHECKING:
    from zambeze_mesh.execution.sandbox import Jail

log = logging.getLogger(__name__)

#: How many bytes of stdout / stderr an :class:`Outcome` keeps.
TAIL_BYTES = 4096

FinalState = Literal["SUCCEEDED", "FAILED", "CANCELLED"]

#: ``(campaign_id, activity, attempt)``: identifies one attempt of one activity.
RunKey = tuple[str, str, int]

EmitFn = Callable[[str, str, dict[str, str] | None], Awaitable[None]]
StageFn = Callable[[str, Path], Awaitable[Path]]


@dataclass
class RunRequest:
    """One attempt of one activity, ready to run on this agent.

    ``kind`` is the activity body kind (``"shell"``, ``"python"``, ...). The
    directories are already resolved to local paths. ``env`` is added on top of
    the plugin's environment; the agent puts ``ZMESH_WORKING_DIR``,
    ``ZMESH_OUTPUT_DIR``, ``ZMESH_AGENT_DIR``, ``ZMESH_CAMPAIGN``,
    ``ZMESH_ACTIVITY`` and, when it staged a script, ``ZMESH_SCRIPT`` there.
    ``sandbox`` is the jail its processes run in (None: not confined).
    """

    campaign_id: str
    activity: str
    attempt: int
    kind: str
    spec: common_pb2.ActivitySpec
    working_dir: Path
    output_dir: Path
    agent_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    sandbox: Jail | None = None

    @property
    def key(self) -> RunKey:
        """``(campaign_id, activity, attempt)``."""
        return (self.campaign_id, self.activity, self.attempt)


@dataclass
class Outcome:
    """How one run ended.

    ``result`` holds the cloudpickled return value of a function activity (the
    bytes are passed through untouched) and is ``b""`` otherwise. ``detail``
    carries plugin-specific facts such as ``exit_code`` or ``pid``.
    """

    state: FinalState
    exit_code: int | None = None
    message: str = ""
    stdout_tail: str = ""
    stderr_tail: str = ""
    result: bytes = b""
    detail: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.state == "SUCCEEDED"


async def _no_emit(state: str, message: str, detail: dict[str, str] | None) -> None:
    log.debug("emit %s %s %s", state, message, detail)


async def _no_stage(uri: str, dest: Path) -> Path:
    raise Unimplemented(f"this agent cannot stage {uri!r}: no stage hook")


class RunContext:
    """Hooks the agent lends a plugin for one run.

    ``emit`` reports a state change (for example ``RUNNING`` with the pid);
    ``stage`` fetches a URI to a local path. Both are async callables supplied
    by the agent; by default ``emit`` only logs and ``stage`` raises
    :class:`~zambeze_mesh.errors.Unimplemented`.
    """

    def __init__(self, emit: EmitFn | None = None, stage: StageFn | None = None) -> None:
        self._emit: EmitFn = emit or _no_emit
        self._stage: StageFn = stage or _no_stage

    async def emit(
        self, state: str, message: str = "", detail: dict[str, str] | None = None
    ) -> None:
        """Report a state change; a failing hook is logged, never raised into the run."""
        try:
            await self._emit(state, message, detail)
        except Exception:
            log.exception("emit hook failed for state %s", state)

    async def stage(self, uri: str, dest: Path) -> Path:
        """Fetch ``uri`` to ``dest`` and return the local path."""
        return await self._stage(uri, dest)


#: Longest activity-derived part of a function's log file names.
_NAME_MAX = 100


def log_name(activity: str) -> str:
    """A file-name-safe stem for an activity's logs, distinct for distinct names.

    ASCII letters, digits, ``-``, ``_`` and ``.`` are kept; when anything else
    had to be replaced (or the name is empty, too long or starts with ``.`` or
    ``-``) a short hash of the real name is appended, so ``"a b"`` and ``"a_b"``
    never share a file.
    """
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in activity)
    if safe == activity and 0 < len(safe) <= _NAME_MAX and not safe.startswith((".", "-")):
        return safe
    digest = hashlib.sha256(activity.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe.lstrip('.-')[:_NAME_MAX] or '_'}-{digest}"
