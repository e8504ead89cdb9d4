"""What a pilot job runs: its spec file, its job description and its scheduler's job id.

The submitting agent writes ``spec.json`` (and the token, mode 0600) into the pilot's
directory; the job runs ``python -m zambeze_mesh.agent.pilot <dir>/spec.json``. Nothing
secret is on the job's command line or in its environment.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput

#: Environment variable holding the job id inside a job, per PSI/J scheduler.
JOB_ID_VARS = {
    "slurm": ("SLURM_JOB_ID",),
    "lsf": ("LSB_JOBID",),
    "pbs": ("PBS_JOBID",),
    "flux": ("FLUX_JOB_ID",),
    "cobalt": ("COBALT_JOBID",),
    "local": (),
}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class PilotSpec:
    """Everything a pilot needs to join and serve (``spec.json``)."""

    agent: str
    seed: str
    seed_admission: str
    scheduler: str
    walltime_s: float
    slots: int
    host: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    membership: str = "local"
    idle_timeout_s: float = 0.0
    margin_s: float = 15.0
    #: ``return``: the pilot keeps its data under ``data_dir``, inside the submitting
    #: agent's data dir, so its outputs stay addressable there once it has left
    #: (see :func:`returned_location`); ``keep``: a data dir of its own.
    pilot_outputs: str = "return"
    data_dir: str = ""

    def save(self, path: Path) -> None:
        """Write as JSON (atomically)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PilotSpec:
        """Read a spec written by :meth:`save`."""
        raw: dict[str, Any] = json.loads(path.read_text())
        return cls(**raw)

    @property
    def name_prefix(self) -> str:
        """The names the pilot's token admits: ``<agent>-pilot-``."""
        return f"{self.agent}-pilot-"


def job_id_from_env(scheduler: str, env: dict[str, str] | None = None) -> str:
    """The job id of the job this process runs in (the pid for ``local``)."""
    env = dict(os.environ) if env is None else env
    for var in JOB_ID_VARS.get(scheduler, ()):
        value = env.get(var, "")
        if value:
            return value
    return str(os.getpid())


def pilot_name(agent: str, job_id: str) -> str:
    """``<agent>-pilot-<jobid>`` (the job id made name-safe: ``123.host`` → ``123.host``)."""
    safe = _SAFE.sub("-", job_id).strip("-.") or "0"
    return f"{agent}-pilot-{safe}"[:63]


def build_pilot_job(
    spec_path: Path,
    *,
    nodes: int,
    walltime: timedelta,
    queue: str = "",
    account: str = "",
    python: str = sys.executable,
    name: str = "zmesh-pilot",
) -> Any:
    """A ``psij.Job`` that starts the pilot agent of ``spec_path`` in its allocation."""
    from psij import Job, JobAttributes, JobSpec, ResourceSpecV1

    if nodes < 1:
        raise InvalidInput("a pilot needs at least one node")
    attrs = JobAttributes(queue_name=queue or None, account=account or None)
    attrs.duration = walltime
    d = spec_path.parent
    spec = JobSpec(
        executable=python,
        arguments=["-m", "zambeze_mesh.agent.pilot", str(spec_path)],
        directory=d,
        name=name,
        inherit_environment=True,
        stdout_path=d / "pilot.out",
        stderr_path=d / "pilot.err",
        # One pilot process: the default ("single") launcher starts it once, on the
        # first node of the allocation.
        resources=ResourceSpecV1(node_count=nodes, processes_per_node=1),
        attributes=attrs,
    )
    job: Any = Job(spec)
    job.name = name  # PSI/J's templates read job.name (#SBATCH --job-name)
    return job


def submitter_of(pilot: str) -> str | None:
    """The submitting agent of a pilot named ``<agent>-pilot-<jobid>`` (else None)."""
    agent, sep, job = pilot.rpartition("-pilot-")
    return agent if sep and agent and job else None


def returned_location(producer: str, path: str, producer_labels: dict[str, str]) -> str | None:
    """Where a left pilot's output ``path`` is served now: ``<submitter>://<path>``.

    Only for pilots (they carry the ``pilot`` label naming themselves) whose outputs
    were returned (``pilot_outputs = "return"``: written under the submitter's data dir).
    """
    labels = producer_labels
    if labels.get("pilot") != producer or labels.get("pilot_outputs") != "return":
        return None
    agent = submitter_of(producer)
    return f"{agent}://{path}" if agent else None
