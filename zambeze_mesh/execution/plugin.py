"""The execution plugin protocol and a base class with shared helpers.

A plugin runs activities of some ``kinds`` (``"shell"``, ``"python"``, ...).
The registry constructs it as ``cls(options=...)`` with its options from the
agent config. Built-ins and third-party plugins register under the entry-point
group ``zambeze_mesh.plugins``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.model import Outcome, RunContext, RunKey, RunRequest
from zambeze_mesh.execution.process import ProcessRun
from zambeze_mesh.execution.sandbox import scrub_env

log = logging.getLogger(__name__)


@runtime_checkable
class Plugin(Protocol):
    """What the agent needs from an execution plugin."""

    name: str
    kinds: set[str]

    def capabilities(self) -> dict[str, str]:
        """Facts to gossip (versions, limits, options), flat string map."""
        ...

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        """Run one attempt to its end and say how it ended."""
        ...

    async def cancel(self, campaign_id: str, activity: str, attempt: int) -> bool:
        """Stop a running attempt; True if it was running here."""
        ...

    async def close(self) -> None:
        """Stop everything this plugin runs and release its resources."""
        ...


def option_bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    """Read a boolean option that may come from a config file as a string."""
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    if isinstance(value, int):
        return bool(value)
    raise InvalidInput(f"option {key!r} must be a boolean, got {value!r}")


@dataclass
class _Job:
    """A run in progress, as far as cancel() is concerned."""

    cancelled: bool = False
    canceller: Callable[[], Awaitable[bool]] | None = None


class BasePlugin:
    """Shared helpers: directories, environment, script lookup, cancel tracking."""

    name: str = "base"
    kinds: set[str] = set()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})
        self.grace_s = float(self.options.get("grace_s", 2.0))
        self._jobs: dict[RunKey, _Job] = {}

    def capabilities(self) -> dict[str, str]:
        """No extra capabilities by default."""
        return {}

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:  # pragma: no cover
        """Subclasses implement this."""
        raise NotImplementedError

    # -- cancel tracking -------------------------------------------------------

    @contextlib.contextmanager
    def track(self, req: RunRequest) -> Iterator[_Job]:
        """Register a run so that :meth:`cancel` can find it while it lasts."""
        job = _Job()
        self._jobs[req.key] = job
        try:
            yield job
        finally:
            if self._jobs.get(req.key) is job:
                del self._jobs[req.key]

    async def cancel(self, campaign_id: str, activity: str, attempt: int) -> bool:
        """Cancel a tracked run; a run not started yet ends as CANCELLED at start."""
        job = self._jobs.get((campaign_id, activity, attempt))
        if job is None:
            return False
        job.cancelled = True
        if job.canceller is not None:
            await job.canceller()
        return True

    async def close(self) -> None:
        """Cancel every tracked run."""
        for key in list(self._jobs):
            await self.cancel(*key)

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def prepare_dirs(req: RunRequest) -> None:
        """Create the working dir and the output dir (a stat first: mkdir is slow on overlays)."""
        for path in (req.working_dir, req.output_dir):
            if not path.is_dir():
                path.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def zmesh_env(req: RunRequest) -> dict[str, str]:
        """The ``ZMESH_*`` variables describing a run (the request env wins)."""
        env = {
            "ZMESH_WORKING_DIR": str(req.working_dir),
            "ZMESH_OUTPUT_DIR": str(req.output_dir),
            "ZMESH_AGENT_DIR": str(req.agent_dir),
            "ZMESH_CAMPAIGN": req.campaign_id,
            "ZMESH_ACTIVITY": req.activity,
            "ZMESH_ATTEMPT": str(req.attempt),
        }
        env.update(req.env)
        return env

    @classmethod
    def build_env(cls, req: RunRequest, spec_env: Mapping[str, str]) -> dict[str, str]:
        """``os.environ`` + the activity's env + the request's env, later wins."""
        env = scrub_env(dict(os.environ))
        env.update(spec_env)
        env.update(cls.zmesh_env(req))
        return env

    @staticmethod
    async def resolve_script(req: RunRequest, ctx: RunContext, uri: str) -> Path | None:
        """Local path of the activity's script, or None when it has none.

        Prefers the path the agent staged (``ZMESH_SCRIPT``); a plain path or a
        ``file://`` URI is used in place (relative to the working dir); anything
        else is fetched through ``ctx.stage`` into the working dir.
        """
        staged = req.env.get("ZMESH_SCRIPT")
        if staged:
            return Path(staged)
        if not uri:
            return None
        if uri.startswith("file://"):
            return req.working_dir / uri[len("file://") :]
        if "://" not in uri:
            return req.working_dir / uri
        name = uri.rsplit("/", 1)[-1] or "script"
        return await ctx.stage(uri, req.working_dir / name)

    async def run_process(
        self,
        req: RunRequest,
        ctx: RunContext,
        job: _Job,
        argv: list[str],
        env: Mapping[str, str],
    ) -> Outcome:
        """Run ``argv`` in the working dir under ``job``, emitting RUNNING with the pid.

        With a sandbox (``req.sandbox``) the process starts inside it.
        """
        if req.sandbox is not None:
            req.sandbox.hand_over(req.working_dir, req.output_dir)
            argv = [*req.sandbox.prefix(cwd=req.working_dir), *argv]
        prun = ProcessRun(
            argv, cwd=req.working_dir, env=env, timeout_s=req.timeout_s, grace_s=self.grace_s
        )
        job.canceller = prun.cancel
        if job.cancelled:
            await prun.cancel()

        async def started(pid: int) -> None:
            await ctx.emit("RUNNING", f"{self.name} pid {pid}", {"pid": str(pid)})

        return await prun.run(on_start=started)
