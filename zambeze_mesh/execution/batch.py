"""``batch`` plugin: run shell and python activities as batch jobs through PSI/J.

Loaded when the agent config sets ``scheduler`` (``slurm``, ``lsf``, ``pbs``,
``flux``, ``cobalt`` or ``local``); the registry then routes ``shell`` and
``python`` activities here instead of to the local plugins (see
:mod:`zambeze_mesh.execution.loading`). Each attempt becomes one PSI/J job: one
process on one node in the activity's working dir, with the agent's environment
plus the activity's and the ``ZMESH_*`` variables, stdout/stderr in the working
dir, the agent's ``queue`` / ``account``, and a walltime from the activity's
timeout (else the agent's ``walltime``). A shipped Python function runs through
:mod:`zambeze_mesh.execution.batch_fn`.

Job states become activity events: ``QUEUED`` (with ``job_id``), ``RUNNING``,
then SUCCEEDED / FAILED / CANCELLED; cancel calls the scheduler's cancel
(``scancel``); a job the scheduler killed at its walltime fails with a message
starting ``TIMEOUT: walltime exceeded``.

Options (filled from the agent config): ``scheduler``, ``queue``, ``account``,
``walltime``, ``work_dir`` (PSI/J's submit scripts), ``poll_s`` (queue polling
interval, default 1), ``python``, ``accept_functions``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput, NotPermitted
from zambeze_mesh.execution.batch_spec import (
    activity_argv,
    build_job,
    job_files,
    timeout_reason,
)
from zambeze_mesh.execution.model import TAIL_BYTES, Outcome, RunContext, RunRequest
from zambeze_mesh.execution.plugin import BasePlugin, _Job, option_bool
from zambeze_mesh.execution.process import read_tail
from zambeze_mesh.execution.wfconfig import with_venv_path
from zambeze_mesh.settings.checks import check_scheduler, parse_walltime

log = logging.getLogger(__name__)

#: Commands each scheduler needs on PATH (checked at load time for a clear reason).
_NEEDS = {"slurm": "sbatch", "lsf": "bsub", "pbs": "qsub", "cobalt": "qsub"}


def slurm_partitions(timeout_s: float = 5.0) -> list[str]:
    """Partition names from ``sinfo -h -o %P`` (the default one loses its ``*``)."""
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if res.returncode != 0:
        return []
    names = [line.strip().rstrip("*") for line in res.stdout.splitlines() if line.strip()]
    return list(dict.fromkeys(names))


def _executor_config(scheduler: str, work_dir: Path | None, poll_s: int) -> Any:
    from psij import JobExecutorConfig
    from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutorConfig

    if scheduler in _NEEDS:
        return BatchSchedulerExecutorConfig(
            work_directory=work_dir,
            queue_polling_interval=poll_s,
            initial_queue_polling_delay=1,
        )
    return JobExecutorConfig(work_directory=work_dir)


class BatchPlugin(BasePlugin):
    """Submits shell/python activities to a batch scheduler; see the module docstring."""

    name = "batch"
    kinds = {"shell", "python"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.scheduler = str(self.options.get("scheduler", ""))
        if not self.scheduler:
            raise InvalidInput("no scheduler configured (set scheduler in the agent config)")
        check_scheduler(self.scheduler)
        command = _NEEDS.get(self.scheduler)
        if command and shutil.which(command) is None:
            raise InvalidInput(f"scheduler {self.scheduler!r} needs {command!r} on PATH")
        self.queue = str(self.options.get("queue", ""))
        self.account = str(self.options.get("account", ""))
        self.walltime = parse_walltime(str(self.options.get("walltime", "")))
        self.poll_s = max(1, int(self.options.get("poll_s", 1)))
        self.python = str(self.options.get("python", sys.executable))
        self.accept_functions = option_bool(self.options, "accept_functions", True)
        work_dir = self.options.get("work_dir")
        from psij import JobExecutor

        self.executor = JobExecutor.get_instance(
            self.scheduler,
            config=_executor_config(
                self.scheduler, Path(work_dir) if work_dir else None, self.poll_s
            ),
        )
        if self.scheduler == "slurm":
            self.partitions = slurm_partitions()
        else:
            self.partitions = [self.queue] if self.queue else []

    def capabilities(self) -> dict[str, str]:
        """Scheduler, queue and partitions."""
        return {
            "scheduler": self.scheduler,
            "queue": self.queue,
            "partitions": ",".join(self.partitions),
        }

    def _walltime(self, req: RunRequest) -> timedelta | None:
        if req.timeout_s:
            return timedelta(seconds=math.ceil(req.timeout_s))
        return self.walltime

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        """Submit the activity as one job and follow it to its end."""
        if req.kind == "shell":
            body_env, uri = req.spec.shell.env, req.spec.shell.script_uri
        elif req.kind == "python":
            body_env, uri = req.spec.python.env, req.spec.python.script_uri
            if req.spec.python.function and not self.accept_functions:
                raise NotPermitted("this agent does not accept shipped functions")
        else:
            raise InvalidInput(f"the batch plugin does not run {req.kind!r} activities")
        with self.track(req) as job:
            self.prepare_dirs(req)
            script = await self.resolve_script(req, ctx, uri)
            if script is not None and not script.is_file():
                return Outcome("FAILED", message=f"script not found: {script}")
            if req.kind == "python" and req.spec.python.function:
                files = job_files(req)
                files.fn_out.unlink(missing_ok=True)
                files.fn_in.write_bytes(req.spec.python.function)
            argv = activity_argv(req, script, self.python)
            if req.sandbox is not None and self.scheduler == "local":
                # Only a local job surely runs on this machine, where the sandbox
                # exists; a cluster job runs on a node the agent does not control.
                req.sandbox.hand_over(req.working_dir, req.output_dir)
                argv = [*req.sandbox.prefix(cwd=req.working_dir), *argv]
            env = with_venv_path(dict(body_env), self.python)
            env.update(self.zmesh_env(req))
            if script is not None:
                env["ZMESH_SCRIPT"] = str(script)
            walltime = self._walltime(req)
            pj = build_job(
                req, argv, env, queue=self.queue, account=self.account, walltime=walltime
            )
            return await self._follow(req, ctx, job, pj, walltime)

    async def _follow(
        self, req: RunRequest, ctx: RunContext, job: _Job, pj: Any, walltime: timedelta | None
    ) -> Outcome:
        from psij import JobState, SubmitException

        loop = asyncio.get_running_loop()
        statuses: asyncio.Queue[Any] = asyncio.Queue()
        pj.set_job_status_callback(
            lambda _j, st: loop.call_soon_threadsafe(statuses.put_nowait, st)
        )
        if job.cancelled:
            return Outcome("CANCELLED", message="cancelled before submission")
        try:
            await asyncio.to_thread(self.executor.submit, pj)
        except SubmitException as exc:
            return Outcome("FAILED", message=f"{self.scheduler} refused the job: {exc}")
        job_id = str(pj.native_id)
        detail = {"job_id": job_id, "scheduler": self.scheduler}

        async def cancel() -> bool:
            await asyncio.to_thread(self.executor.cancel, pj)
            return True

        job.canceller = cancel
        if job.cancelled:
            await cancel()
        running = False
        while True:
            status = await statuses.get()
            state = status.state
            if state == JobState.QUEUED:
                msg = f"{self.scheduler} job {job_id} queued"
                await ctx.emit("QUEUED", msg, dict(detail))
            elif state == JobState.ACTIVE and not running:
                running = True
                await ctx.emit("RUNNING", f"{self.scheduler} job {job_id} running", dict(detail))
            elif state.final:
                return self._outcome(req, status, detail, walltime, job.cancelled)

    def _outcome(
        self,
        req: RunRequest,
        status: Any,
        detail: dict[str, str],
        walltime: timedelta | None,
        cancelled: bool,
    ) -> Outcome:
        from psij import JobState

        files = job_files(req)
        out = read_tail(files.stdout, TAIL_BYTES)
        err = read_tail(files.stderr, TAIL_BYTES)
        code = status.exit_code
        detail = dict(detail, job_state=str(status.state))
        if status.state == JobState.CANCELED or cancelled:
            msg = f"{self.scheduler} job {detail['job_id']} cancelled"
            return Outcome("CANCELLED", code, msg, out, err, detail=detail)
        if status.state == JobState.COMPLETED and not code:
            result = b""
            fn_out = files.fn_out
            if req.kind == "python" and req.spec.python.function:
                if not fn_out.is_file():
                    msg = "the function left no result"
                    return Outcome("FAILED", code, msg, out, err, detail=detail)
                result = fn_out.read_bytes()
            return Outcome("SUCCEEDED", 0, "", out, err, result, detail)
        reason = str(status.message or "")
        if timeout_reason(reason):
            detail["reason"] = "TIMEOUT"
            limit = f" ({walltime})" if walltime is not None else ""
            msg = f"TIMEOUT: walltime exceeded{limit}: {reason}"
        elif code:
            msg = f"exit code {code}" + (f": {reason}" if reason else "")
        else:
            msg = reason or "the batch job failed"
        return Outcome("FAILED", code, msg, out, err, detail=detail)
