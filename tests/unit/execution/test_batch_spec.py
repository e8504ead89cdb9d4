"""Batch job descriptions: walltimes, argv, PSI/J jobs, config validation, routing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.batch_spec import (
    FN_IN,
    FN_OUT,
    activity_argv,
    build_job,
    job_files,
    timeout_reason,
)
from zambeze_mesh.execution.loading import SchedulerRegistry, plugin_options, scheduler_facts
from zambeze_mesh.execution.model import Outcome, RunContext, RunRequest
from zambeze_mesh.execution.plugin import BasePlugin
from zambeze_mesh.settings.checks import parse_walltime
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.v1 import common_pb2

S = common_pb2


def req(tmp_path: Path, kind: str, spec: S.ActivitySpec) -> RunRequest:
    return RunRequest("c1", spec.name, 1, kind, spec, tmp_path / "w", tmp_path / "o", tmp_path)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", None),
        ("5", timedelta(minutes=5)),
        ("2:30", timedelta(minutes=2, seconds=30)),
        ("01:02:03", timedelta(hours=1, minutes=2, seconds=3)),
        ("1-12", timedelta(days=1, hours=12)),
        ("2-00:30:00", timedelta(days=2, minutes=30)),
    ],
)
def test_parse_walltime(text: str, expected: timedelta | None) -> None:
    assert parse_walltime(text) == expected


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "-5", "0", "00:00:00", "5m"])
def test_parse_walltime_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_walltime(text)


def test_argv_for_each_kind(tmp_path: Path) -> None:
    sh = S.ActivitySpec(name="a", shell=S.ShellSpec(cmd="echo hi"))
    assert activity_argv(req(tmp_path, "shell", sh), None) == ["/bin/sh", "-c", "echo hi"]
    script = tmp_path / "s.sh"
    sh2 = S.ActivitySpec(name="a", shell=S.ShellSpec(script_uri="file://x"))
    assert activity_argv(req(tmp_path, "shell", sh2), script) == ["/bin/sh", str(script)]
    py = S.ActivitySpec(name="p", python=S.PythonSpec(script_uri="file://x", args=["1", "2"]))
    assert activity_argv(req(tmp_path, "python", py), script, python="/py") == [
        "/py",
        str(script),
        "1",
        "2",
    ]
    fn = S.ActivitySpec(name="f", python=S.PythonSpec(function=b"x"))
    r = req(tmp_path, "python", fn)
    assert activity_argv(r, None, python="/py") == [
        "/py",
        "-m",
        "zambeze_mesh.execution.batch_fn",
        str(r.working_dir / f"f.{FN_IN}"),
        str(r.working_dir / f"f.{FN_OUT}"),
    ]
    # Functions of a campaign share a working dir: every file of the job is per activity.
    other = req(tmp_path, "python", S.ActivitySpec(name="g h", python=S.PythonSpec(function=b"x")))
    mine, theirs = job_files(r), job_files(other)
    assert len({*vars(mine).values(), *vars(theirs).values()}) == 8
    assert job_files(req(tmp_path, "shell", sh)).stdout == r.working_dir / "stdout.log"
    with pytest.raises(InvalidInput, match="neither cmd nor script"):
        activity_argv(req(tmp_path, "shell", S.ActivitySpec(name="e", shell=S.ShellSpec())), None)
    with pytest.raises(InvalidInput, match="does not run 'workflow'"):
        activity_argv(req(tmp_path, "workflow", S.ActivitySpec(name="w")), None)


def test_build_job(tmp_path: Path) -> None:
    pytest.importorskip("psij")
    sh = S.ActivitySpec(name="my act", shell=S.ShellSpec(cmd="true"))
    r = req(tmp_path, "shell", sh)
    job = build_job(
        r,
        ["/bin/sh", "-c", "true"],
        {"A": "1"},
        queue="debug",
        account="proj1",
        walltime=timedelta(minutes=3),
    )
    spec = job.spec
    assert spec.executable == "/bin/sh" and spec.arguments == ["-c", "true"]
    assert spec.directory == r.working_dir and spec.environment == {"A": "1"}
    assert spec.name == "zmesh-my_act"
    assert spec.stdout_path == r.working_dir / "stdout.log"
    assert spec.attributes.queue_name == "debug" and spec.attributes.account == "proj1"
    assert spec.attributes.duration == timedelta(minutes=3)
    assert spec.resources.computed_node_count == 1


def test_timeout_reason() -> None:
    assert timeout_reason("The job exhausted its time limit.")
    assert timeout_reason("TIMEOUT")
    assert not timeout_reason("The job terminated with a non-zero exit code.")


def cfg(**kw: Any) -> AgentConfig:
    return AgentConfig(name="a", mesh="m", listen="127.0.0.1:0", **kw)


def test_agent_config_batch_fields() -> None:
    c = cfg(scheduler="slurm", queue="debug", account="p1", walltime="00:10:00")
    opts = plugin_options(c, Path("/data"))
    assert opts["batch"] == {
        "scheduler": "slurm",
        "queue": "debug",
        "account": "p1",
        "walltime": "00:10:00",
        "accept_functions": True,
        "work_dir": str(Path("/data") / "batch"),
    }
    assert opts["dask"] == {"slots": 2} and "batch" not in plugin_options(cfg())
    with pytest.raises(InvalidInput, match="scheduler 'sge'"):
        cfg(scheduler="sge")
    with pytest.raises(InvalidInput, match="walltime"):
        cfg(scheduler="slurm", walltime="soon")
    with pytest.raises(InvalidInput, match="need a scheduler"):
        cfg(queue="debug")
    with pytest.raises(InvalidInput, match="plain name"):
        cfg(scheduler="slurm", queue='x"; rm -rf /')
    with pytest.raises(InvalidInput, match="unknown config keys"):
        AgentConfig.from_dict({"name": "a", "mesh": "m", "listen": "127.0.0.1:0", "sched": "x"})


class FakeBatch(BasePlugin):
    name = "batch"
    kinds = {"shell", "python"}
    scheduler = "pbs"
    partitions = ["workq"]

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        return Outcome("SUCCEEDED")


class FakeLocal(FakeBatch):
    name = "shell"
    kinds = {"shell"}


def test_scheduler_registry_prefers_batch() -> None:
    reg = SchedulerRegistry()
    reg.add(FakeLocal())
    assert reg.for_kind("shell", "shell").name == "shell"  # no batch plugin: local
    assert scheduler_facts(reg) == ("", [])
    reg.add(FakeBatch())
    assert reg.for_kind("shell", "shell").name == "batch"
    assert reg.for_kind("shell").name == "batch"
    assert reg.for_kind("python", "python").name == "batch"
    assert scheduler_facts(reg) == ("pbs", ["workq"])
