"""``python`` plugin: run a script, or call a shipped function in a warm worker."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from zambeze_mesh.errors import InvalidInput, NotPermitted
from zambeze_mesh.execution.model import TAIL_BYTES, Outcome, RunContext, RunRequest, log_name
from zambeze_mesh.execution.plugin import BasePlugin, option_bool
from zambeze_mesh.execution.workers import TaskResult, WorkerPool


class PythonPlugin(BasePlugin):
    """Runs PythonActivity specs.

    Script mode runs ``python script args...`` as a process (the script from
    ``$ZMESH_SCRIPT`` or a local ``script_uri``). Function mode calls the
    cloudpickled ``(func, args, kwargs)`` in a warm :class:`WorkerPool` with
    the working dir as cwd; the return value comes back as
    ``Outcome.result`` (cloudpickle bytes). Shipped functions of a campaign
    may share one working dir, so a function's output goes to
    ``<name>.stdout.log`` / ``<name>.stderr.log`` there (``<name>`` from
    :func:`log_name`), written only when it printed something (a retry first
    removes the logs of the earlier attempt); the tails come from the worker.

    Options: ``accept_functions`` (default True), ``workers`` (pool size,
    default ``min(4, cpu_count)``), ``python`` (interpreter for scripts and
    workers, default this one), ``grace_s``.
    """

    name = "python"
    kinds = {"python"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.accept_functions = option_bool(self.options, "accept_functions", True)
        self.python = str(self.options.get("python", sys.executable))
        size = int(self.options.get("workers", min(4, os.cpu_count() or 1)))
        if size < 1:
            raise InvalidInput("option 'workers' must be at least 1")
        self.pool = WorkerPool(size, python=self.python, tail_bytes=TAIL_BYTES)

    def capabilities(self) -> dict[str, str]:
        """Python version, whether shipped functions are accepted, pool size."""
        return {
            "version": platform.python_version(),
            "functions": "true" if self.accept_functions else "false",
            "workers": str(self.pool.size),
        }

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        """Run the script or call the function; see the class docstring."""
        spec = req.spec.python
        if spec.function and not self.accept_functions:
            raise NotPermitted("this agent does not accept shipped functions")
        with self.track(req) as job:
            self.prepare_dirs(req)
            if spec.function:
                return await self._run_function(req, ctx)
            script = await self.resolve_script(req, ctx, spec.script_uri)
            if script is None:
                raise InvalidInput(
                    f"python activity {req.activity!r} has neither script nor function"
                )
            if not script.is_file():
                return Outcome("FAILED", message=f"script not found: {script}")
            env = self.build_env(req, spec.env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            argv = [self.python, str(script), *spec.args]
            return await self.run_process(req, ctx, job, argv, env)

    async def _run_function(self, req: RunRequest, ctx: RunContext) -> Outcome:
        job = self._jobs[req.key]
        pool = self.pool
        env = dict(req.spec.python.env)
        env.update(self.zmesh_env(req))
        name = log_name(req.activity)
        out = req.working_dir / f"{name}.stdout.log"
        err = req.working_dir / f"{name}.stderr.log"
        if req.attempt > 1:  # a silent retry must not leave an earlier attempt's logs behind
            for path in (out, err):
                path.unlink(missing_ok=True)
        await ctx.emit("RUNNING", "python function", {})
        if job.cancelled:
            return Outcome("CANCELLED", message="cancelled before start")

        async def cancel() -> bool:
            return await pool.cancel(req.key)

        # No await between here and pool.run registering the task: no lost cancel.
        job.canceller = cancel
        if req.sandbox is not None:
            req.sandbox.hand_over(req.working_dir, req.output_dir)
        res = await pool.run(
            req.spec.python.function,
            task_id=req.key,
            cwd=req.working_dir,
            stdout_path=out,
            stderr_path=err,
            env=env,
            timeout_s=req.timeout_s,
            sandbox=req.sandbox,
        )
        return self._outcome(res, req)

    @staticmethod
    def _outcome(res: TaskResult, req: RunRequest) -> Outcome:
        out, err = res.stdout_tail, res.stderr_tail
        detail = {
            "worker_pid": str(res.worker_pid),
            "call_us": f"{res.call_ns / 1000:.1f}",
            "worker_us": f"{res.worker_ns / 1000:.1f}",
        }
        if res.state == "ok":
            return Outcome("SUCCEEDED", None, "", out, err, res.result, detail)
        if res.state == "error":
            return Outcome("FAILED", None, res.summary, out, err or res.traceback, b"", detail)
        if res.state == "cancelled":
            return Outcome("CANCELLED", None, "cancelled", out, err, b"", detail)
        if res.state == "timeout":
            msg = f"timed out after {req.timeout_s:g}s"
            return Outcome("FAILED", None, msg, out, err, b"", detail)
        return Outcome("FAILED", None, res.summary, out, err, b"", detail)

    async def close(self) -> None:
        """Cancel running work and stop the worker pool."""
        await super().close()
        await self.pool.close()
