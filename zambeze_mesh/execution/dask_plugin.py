"""``dask`` plugin: run a WFActivity's script against a Dask cluster.

The script (``$ZMESH_SCRIPT``) runs as a subprocess (timeout and cancel kill its
process group) and connects with :func:`zambeze_mesh.wf.dask_client`, which reads
``$ZMESH_DASK_SCHEDULER``. When ``wf_config`` has ``scheduler_address`` the
script connects there; otherwise to this agent's own LocalCluster.

The LocalCluster is **one per agent**, started on the first Dask activity and
kept until the agent stops (``n_workers = slots``, one thread each, processes,
no dashboard, 127.0.0.1). Starting a cluster costs seconds on a small machine,
which would dominate short activities; Dask clients are isolated from each other
on a shared scheduler (a client's futures are released when it disconnects), and
the cluster is restarted when it has died. It lives in its own process
(:mod:`zambeze_mesh.execution.dask_cluster`) so that Dask never runs inside the
agent's event loop. Option ``shared_cluster = false`` starts one per activity.

Options: ``slots`` (workers, default CPU count), ``shared_cluster`` (default
true), ``startup_timeout_s`` (default 60), ``python``, ``grace_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput, Unavailable
from zambeze_mesh.execution.model import Outcome, RunContext, RunRequest
from zambeze_mesh.execution.plugin import BasePlugin, option_bool
from zambeze_mesh.execution.process import kill_group, read_tail
from zambeze_mesh.execution.wfconfig import (
    ENV_DASK_SCHEDULER,
    installed_version,
    option_slots,
    parse_wf_config,
    with_venv_path,
    workflow_env,
)

log = logging.getLogger(__name__)


class LocalDaskCluster:
    """A ``dask_cluster`` subprocess: ``await start()`` → scheduler address; ``await stop()``."""

    def __init__(self, workers: int, directory: Path, python: str = sys.executable) -> None:
        self.workers = workers
        self.directory = directory
        self.python = python
        self.address = ""
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def alive(self) -> bool:
        """True while the cluster process runs."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout_s: float = 60.0) -> str:
        """Start the process and wait until it publishes its scheduler address."""
        self.directory.mkdir(parents=True, exist_ok=True)
        addr_file = self.directory / f"scheduler-{os.getpid()}-{id(self)}.addr"
        addr_file.unlink(missing_ok=True)
        log_path = self.directory / "cluster.log"
        with open(log_path, "ab") as logf:
            self._proc = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "zambeze_mesh.execution.dask_cluster",
                "--workers",
                str(self.workers),
                "--address-file",
                str(addr_file),
                "--local-directory",
                str(self.directory),
                stdin=asyncio.subprocess.PIPE,
                stdout=logf,
                stderr=logf,
                env=with_venv_path(os.environ, self.python),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not addr_file.exists():
            if self._proc.returncode is not None or time.monotonic() > deadline:
                tail = read_tail(log_path, 2000)
                await self.stop()
                raise Unavailable(f"the Dask LocalCluster did not start: {tail.strip()[-500:]}")
            await asyncio.sleep(0.05)
        self.address = addr_file.read_text().strip()
        addr_file.unlink(missing_ok=True)
        log.info("dask cluster with %d workers at %s", self.workers, self.address)
        return self.address

    async def stop(self) -> None:
        """Stop the cluster (SIGTERM, then SIGKILL its process group)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                pass
        kill_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()


class DaskPlugin(BasePlugin):
    """Runs ``WFActivity(wf_manager="dask")``; see the module docstring."""

    name = "dask"
    kinds = {"workflow"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        # Fail at load time when distributed is missing, without importing it into the agent.
        self.version = installed_version("distributed")
        self.slots = option_slots(self.options)
        self.shared = option_bool(self.options, "shared_cluster", True)
        self.startup_timeout_s = float(self.options.get("startup_timeout_s", 60.0))
        self.python = str(self.options.get("python", sys.executable))
        self._cluster: LocalDaskCluster | None = None
        self._lock = asyncio.Lock()

    def capabilities(self) -> dict[str, str]:
        """Dask version and worker count."""
        return {"version": self.version, "workers": str(self.slots)}

    async def _shared_address(self, agent_dir: Path) -> str:
        async with self._lock:
            if self._cluster is None or not self._cluster.alive:
                if self._cluster is not None:
                    log.warning("dask cluster died; starting a new one")
                    await self._cluster.stop()
                cluster = LocalDaskCluster(self.slots, agent_dir / "dask", self.python)
                await cluster.start(self.startup_timeout_s)
                self._cluster = cluster
            return self._cluster.address

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        """Run the workflow script with a scheduler address in its environment."""
        spec = req.spec.workflow
        with self.track(req) as job:
            self.prepare_dirs(req)
            try:
                config = parse_wf_config(spec.wf_config_json)
            except InvalidInput as exc:
                return Outcome("FAILED", message=str(exc))
            script = await self.resolve_script(req, ctx, spec.wf_uri)
            if script is None:
                return Outcome("FAILED", message=f"dask activity {req.activity!r} has no wf_uri")
            if not script.is_file():
                return Outcome("FAILED", message=f"workflow script not found: {script}")
            own: LocalDaskCluster | None = None
            address = config.get("scheduler_address")
            if address is not None and not isinstance(address, str):
                return Outcome("FAILED", message="wf_config scheduler_address must be a string")
            if not address:
                await ctx.emit(
                    "RUNNING", "starting Dask cluster", {"dask_workers": str(self.slots)}
                )
                if self.shared:
                    address = await self._shared_address(req.agent_dir)
                else:
                    own = LocalDaskCluster(self.slots, req.working_dir / "dask", self.python)
                    address = await own.start(self.startup_timeout_s)
            env = workflow_env(self.build_env(req, {}), "dask", config, self.slots)
            env[ENV_DASK_SCHEDULER] = address
            argv = [self.python, str(script), *spec.args]
            try:
                outcome = await self.run_process(req, ctx, job, argv, env)
            finally:
                if own is not None:
                    await own.stop()
            outcome.detail["dask_scheduler"] = address
            if outcome.state == "FAILED" and "Traceback" in outcome.stderr_tail:
                last = outcome.stderr_tail.strip().splitlines()[-1]
                outcome.message = f"{outcome.message}: {last}"
            return outcome

    async def close(self) -> None:
        """Cancel running scripts and stop the shared cluster."""
        await super().close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):
                await cluster.stop()
