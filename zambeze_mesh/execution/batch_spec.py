"""Turning an activity into a PSI/J job, without touching a scheduler.

:func:`parse_walltime` and :func:`activity_argv` are pure; :func:`build_job`
makes a ``psij.Job`` and :func:`render_submit_script` asks a PSI/J batch executor
for the submit script it *would* use (``generate_submit_script``), which is how
the LSF / PBS job descriptions are tested where those schedulers do not run.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.model import RunRequest, log_name

#: File the cloudpickled ``(func, args, kwargs)`` of a function activity goes to.
FN_IN = "zmesh-function.pkl"
#: File its cloudpickled return value comes back in.
FN_OUT = "zmesh-result.pkl"


@dataclass(frozen=True)
class JobFiles:
    """Where a batch job's function input/result and its stdout/stderr go.

    Shipped functions of a campaign share one working dir, so theirs are named after
    the activity (``<name>.zmesh-function.pkl``, ``<name>.stdout.log``...); other
    activities have a working dir of their own and use the plain names.
    """

    fn_in: Path
    fn_out: Path
    stdout: Path
    stderr: Path


def job_files(req: RunRequest) -> JobFiles:
    """The files of ``req``'s batch job (see :class:`JobFiles`)."""
    d = req.working_dir
    if req.kind == "python" and req.spec.python.function:
        stem = log_name(req.activity)
        return JobFiles(
            d / f"{stem}.{FN_IN}",
            d / f"{stem}.{FN_OUT}",
            d / f"{stem}.stdout.log",
            d / f"{stem}.stderr.log",
        )
    return JobFiles(d / FN_IN, d / FN_OUT, d / "stdout.log", d / "stderr.log")


def activity_argv(
    req: RunRequest, script: Path | None, python: str = sys.executable, shell: str = "/bin/sh"
) -> list[str]:
    """What the batch job runs for a shell or python activity."""
    spec = req.spec
    if req.kind == "shell":
        if spec.shell.cmd:
            return [shell, "-c", spec.shell.cmd]
        if script is not None:
            return [shell, str(script)]
        raise InvalidInput(f"shell activity {req.activity!r} has neither cmd nor script")
    if req.kind == "python":
        if spec.python.function:
            files = job_files(req)
            return [
                python,
                "-m",
                "zambeze_mesh.execution.batch_fn",
                str(files.fn_in),
                str(files.fn_out),
            ]
        if script is not None:
            return [python, str(script), *spec.python.args]
        raise InvalidInput(f"python activity {req.activity!r} has neither script nor function")
    raise InvalidInput(f"the batch plugin does not run {req.kind!r} activities")


def build_job(
    req: RunRequest,
    argv: list[str],
    env: Mapping[str, str],
    *,
    queue: str = "",
    account: str = "",
    walltime: timedelta | None = None,
    custom: Mapping[str, object] | None = None,
) -> Any:
    """A ``psij.Job`` running ``argv`` in the working dir, one process on one node."""
    from psij import Job, JobAttributes, JobSpec, ResourceSpecV1

    attrs = JobAttributes(
        queue_name=queue or None,
        account=account or None,
        custom_attributes=dict(custom or {}) or None,
    )
    if walltime is not None:
        attrs.duration = walltime
    spec = JobSpec(
        executable=argv[0],
        arguments=argv[1:],
        directory=req.working_dir,
        name=_job_name(req),
        inherit_environment=True,
        environment=dict(env),
        stdout_path=job_files(req).stdout,
        stderr_path=job_files(req).stderr,
        resources=ResourceSpecV1(node_count=1, process_count=1),
        attributes=attrs,
    )
    job: Any = Job(spec)
    # PSI/J's templates read ``job.name`` (e.g. ``#SBATCH --job-name``), which Job lacks.
    job.name = spec.name
    return job


def _job_name(req: RunRequest) -> str:
    raw = f"zmesh-{req.activity}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:64]


def render_submit_script(executor: Any, job: Any) -> str:
    """The submit script a PSI/J batch executor would submit for ``job`` (not submitted)."""
    context = executor._create_script_context(job)
    out = io.StringIO()
    executor.generate_submit_script(job, context, out)
    return out.getvalue()


def timeout_reason(message: str) -> bool:
    """True when a scheduler's failure message says the walltime ran out."""
    low = message.lower()
    return "time limit" in low or "timelimit" in low or "walltime" in low or "timeout" in low
