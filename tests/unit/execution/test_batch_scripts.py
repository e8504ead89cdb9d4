"""The submit scripts PSI/J would generate for our jobs, where the scheduler cannot run here.

LSF and PBS Pro do not run on this machine: PSI/J renders their submit scripts without
submitting (``generate_submit_script``), and these tests check the directives our job
description produces. Flux's PSI/J executor needs the ``flux`` Python bindings; without
them the batch plugin fails to load with the reason.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from zambeze_mesh.execution.batch_spec import activity_argv, build_job, render_submit_script
from zambeze_mesh.execution.model import RunRequest
from zambeze_mesh.execution.registry import PluginRegistry
from zambeze_mesh.v1 import common_pb2

S = common_pb2
pytest.importorskip("psij")


def executor(name: str, tmp_path: Path) -> Any:
    from psij import JobExecutor
    from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutorConfig

    return JobExecutor.get_instance(
        name, config=BatchSchedulerExecutorConfig(work_directory=tmp_path / "psij")
    )


def job_for(tmp_path: Path, cmd: str = "echo hi > out.txt") -> tuple[RunRequest, Any]:
    spec = S.ActivitySpec(name="step1", shell=S.ShellSpec(cmd=cmd))
    req = RunRequest("c1", "step1", 1, "shell", spec, tmp_path / "w", tmp_path / "o", tmp_path)
    env = {"ZMESH_OUTPUT_DIR": str(req.output_dir), "GREETING": "hello world"}
    job = build_job(
        req,
        activity_argv(req, None),
        env,
        queue="batchq",
        account="abc123",
        walltime=timedelta(hours=1, minutes=30),
    )
    return req, job


def directives(script: str, prefix: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.startswith(prefix)]


def test_lsf_script(tmp_path: Path) -> None:
    req, job = job_for(tmp_path)
    script = render_submit_script(executor("lsf", tmp_path), job)
    d = directives(script, "#BSUB")
    assert '#BSUB -J "zmesh-step1"' in d
    assert f'#BSUB -cwd "{req.working_dir}"' in d
    assert '#BSUB -q "batchq"' in d and '#BSUB -P "abc123"' in d
    assert "#BSUB -W 1:30" in d  # LSF takes [hours:]minutes
    assert "#BSUB -nnodes 1" in d and "#BSUB -n 1" in d
    assert "#BSUB -env all" in d
    assert any(x.startswith("#BSUB -env GREETING=") and "hello world" in x for x in d)
    assert "/bin/sh" in script and "echo hi > out.txt" in script


def test_pbs_script(tmp_path: Path) -> None:
    req, job = job_for(tmp_path)
    script = render_submit_script(executor("pbs", tmp_path), job)
    d = directives(script, "#PBS")
    assert "#PBS -q batchq" in d and "#PBS -A abc123" in d
    assert "#PBS -l walltime=1:30:0" in d or "#PBS -l walltime=01:30:00" in d, d
    assert any(x.startswith("#PBS -l select=1:ncpus=1") for x in d), d
    assert "#PBS -V" in d
    assert f'cd "{req.working_dir}"' in script or str(req.working_dir) in script
    assert "export GREETING=" in script and "hello world" in script
    assert "echo hi > out.txt" in script


def test_slurm_script(tmp_path: Path) -> None:
    req, job = job_for(tmp_path)
    script = render_submit_script(executor("slurm", tmp_path), job)
    d = directives(script, "#SBATCH")
    assert '#SBATCH --job-name="zmesh-step1"' in d
    assert f'#SBATCH --chdir="{req.working_dir}"' in d
    assert '#SBATCH --partition="batchq"' in d and '#SBATCH --account="abc123"' in d
    assert "#SBATCH --time=1:30:0" in d
    assert "#SBATCH --nodes=1" in d and "#SBATCH --ntasks=1" in d
    assert "#SBATCH --export=ALL" in d


def test_env_values_are_quoted_for_the_shell(tmp_path: Path) -> None:
    spec = S.ActivitySpec(name="q", shell=S.ShellSpec(cmd="true"))
    req = RunRequest("c1", "q", 1, "shell", spec, tmp_path / "w", tmp_path / "o", tmp_path)
    job = build_job(req, ["/bin/true"], {"EVIL": "x; touch /tmp/pwned-zmesh"})
    script = render_submit_script(executor("slurm", tmp_path), job)
    line = next(x for x in script.splitlines() if x.startswith("export EVIL="))
    assert line != "export EVIL=x; touch /tmp/pwned-zmesh"
    assert "'" in line or '"' in line or "\\" in line


@pytest.mark.skipif(importlib.util.find_spec("flux") is not None, reason="flux is installed")
async def test_flux_without_bindings_fails_to_load_with_reason() -> None:
    reg = PluginRegistry.load(
        extra=[],
        disabled=["shell", "python", "dask", "parsl", "hello"],
        options={"batch": {"scheduler": "flux"}},
    )
    try:
        assert "batch" not in reg.loaded
        assert "flux" in reg.failed["batch"].lower()
    finally:
        await reg.close()


async def test_batch_without_scheduler_or_command_fails_to_load() -> None:
    reg = PluginRegistry.load(
        disabled=["shell", "python", "dask", "parsl", "hello"],
        options={"batch": {"scheduler": "lsf"}},
    )
    try:
        assert "needs 'bsub' on PATH" in reg.failed["batch"]
    finally:
        await reg.close()
