"""ShellPlugin and process.py: exit codes, tails, env, dirs, timeout, cancel."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.unit.execution.execution_helpers import MakeReq, alive, wait_dead, wait_for_file_lines
from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution import RunContext, ShellPlugin
from zambeze_mesh.execution.process import ProcessRun, describe_exit
from zambeze_mesh.v1.common_pb2 import ShellSpec


async def test_success_captures_stdout_and_creates_dirs(
    shell: ShellPlugin, make_req: MakeReq
) -> None:
    req = make_req(shell=ShellSpec(cmd="echo hello; pwd"))
    assert not req.working_dir.exists()
    out = await shell.run(req, RunContext())
    assert out.state == "SUCCEEDED" and out.ok
    assert out.exit_code == 0
    assert out.stdout_tail.splitlines() == ["hello", str(req.working_dir)]
    assert req.output_dir.is_dir()
    assert (req.working_dir / "stdout.log").read_text() == out.stdout_tail
    assert out.detail["exit_code"] == "0"


async def test_failure_reports_exit_code_and_stderr(shell: ShellPlugin, make_req: MakeReq) -> None:
    req = make_req(shell=ShellSpec(cmd="echo oops >&2; exit 7"))
    out = await shell.run(req, RunContext())
    assert out.state == "FAILED"
    assert out.exit_code == 7
    assert out.message == "exit code 7"
    assert out.stderr_tail == "oops\n"


async def test_stderr_tail_keeps_only_the_end(shell: ShellPlugin, make_req: MakeReq) -> None:
    # ~20 KiB of stderr, then a marker line.
    cmd = "i=0; while [ $i -lt 2000 ]; do echo line-$i-padding >&2; i=$((i+1)); done; echo END >&2"
    out = await shell.run(make_req(shell=ShellSpec(cmd=cmd)), RunContext())
    assert out.ok
    assert 4000 <= len(out.stderr_tail.encode()) <= 4096
    assert out.stderr_tail.endswith("END\n")
    assert "line-0-" not in out.stderr_tail


async def test_env_layers(
    shell: ShellPlugin, make_req: MakeReq, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZM_TEST_BASE", "from-os")
    monkeypatch.setenv("ZM_TEST_OVER", "from-os")
    spec = ShellSpec(
        cmd='echo "$ZM_TEST_BASE $ZM_TEST_OVER $ZM_TEST_SPEC $ZM_TEST_REQ"; '
        'echo "$ZMESH_CAMPAIGN $ZMESH_ACTIVITY"; echo "$ZMESH_WORKING_DIR"; '
        'echo "$ZMESH_OUTPUT_DIR"; echo "$ZMESH_AGENT_DIR"',
        env={"ZM_TEST_OVER": "from-spec", "ZM_TEST_SPEC": "spec", "ZM_TEST_REQ": "spec"},
    )
    req = make_req(shell=spec, activity="envact", env={"ZM_TEST_REQ": "req"})
    out = await shell.run(req, RunContext())
    lines = out.stdout_tail.splitlines()
    assert lines[0] == "from-os from-spec spec req"
    assert lines[1] == "c1 envact"
    assert lines[2:] == [str(req.working_dir), str(req.output_dir), str(req.agent_dir)]


async def test_emit_running_with_pid(shell: ShellPlugin, make_req: MakeReq) -> None:
    seen: list[tuple[str, str, dict[str, str] | None]] = []

    async def emit(state: str, message: str, detail: dict[str, str] | None) -> None:
        seen.append((state, message, detail))

    out = await shell.run(make_req(shell=ShellSpec(cmd="true")), RunContext(emit=emit))
    assert out.ok
    assert [s for s, _, _ in seen] == ["RUNNING"]
    assert seen[0][2] is not None and seen[0][2]["pid"] == out.detail["pid"]


async def test_timeout_kills_group(shell: ShellPlugin, make_req: MakeReq) -> None:
    req = make_req(shell=ShellSpec(cmd="sleep 30 & echo $! > pids; sleep 30"), timeout_s=0.3)
    t0 = time.monotonic()
    out = await shell.run(req, RunContext())
    assert time.monotonic() - t0 < 5
    assert out.state == "FAILED"
    assert out.message == "timed out after 0.3s"
    pids = [int(p) for p in (req.working_dir / "pids").read_text().split()]
    assert wait_dead(pids)


async def test_timeout_escalates_to_sigkill(make_req: MakeReq) -> None:
    plugin = ShellPlugin(options={"grace_s": 0.2})
    req = make_req(shell=ShellSpec(cmd="trap '' TERM; echo ready; while :; do sleep 0.05; done"))
    req.timeout_s = 0.3
    out = await plugin.run(req, RunContext())
    assert out.state == "FAILED" and out.message.startswith("timed out")
    assert out.exit_code == -9


async def test_cancel_kills_grandchildren(shell: ShellPlugin, make_req: MakeReq) -> None:
    cmd = "sleep 100 & echo $! >> pids; sleep 100 & echo $! >> pids; wait"
    req = make_req(shell=ShellSpec(cmd=cmd))
    task = asyncio.create_task(shell.run(req, RunContext()))
    pids = [int(p) for p in await wait_for_file_lines(req.working_dir / "pids", 2)]
    assert all(alive(p) for p in pids)
    assert await shell.cancel("c1", req.activity, 1) is True
    out = await asyncio.wait_for(task, 5)
    assert out.state == "CANCELLED"
    assert wait_dead(pids)
    assert await shell.cancel("c1", req.activity, 1) is False


async def test_leftover_background_processes_are_reaped(
    shell: ShellPlugin, make_req: MakeReq
) -> None:
    req = make_req(shell=ShellSpec(cmd="sleep 100 > /dev/null 2>&1 & echo $! > pids"))
    out = await asyncio.wait_for(shell.run(req, RunContext()), 5)
    assert out.ok
    pids = [int(p) for p in (req.working_dir / "pids").read_text().split()]
    assert wait_dead(pids)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def test_cancel_before_start(shell: ShellPlugin, make_req: MakeReq) -> None:
    gate = asyncio.Event()

    async def stage(uri: str, dest: Path) -> Path:
        await gate.wait()
        _write(dest, "echo ran > ran.txt\n")
        return dest

    req = make_req(shell=ShellSpec(script_uri="peer://scripts/run.sh"))
    task = asyncio.create_task(shell.run(req, RunContext(stage=stage)))
    await asyncio.sleep(0.05)
    assert await shell.cancel("c1", req.activity, 1) is True
    gate.set()
    out = await asyncio.wait_for(task, 5)
    assert out.state == "CANCELLED"
    assert not (req.working_dir / "ran.txt").exists()


async def test_staged_script_runs_when_cmd_empty(
    shell: ShellPlugin, make_req: MakeReq, tmp_path: Path
) -> None:
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/sh\necho "script in $(pwd) args=$#"\n')
    os.chmod(script, 0o644)
    req = make_req(shell=ShellSpec(script_uri="peer://job.sh"), env={"ZMESH_SCRIPT": str(script)})
    out = await shell.run(req, RunContext())
    assert out.ok, out
    assert out.stdout_tail == f"script in {req.working_dir} args=0\n"
    assert os.access(script, os.X_OK)


async def test_script_without_shebang_and_cmd_using_it(
    shell: ShellPlugin, make_req: MakeReq
) -> None:
    req = make_req(shell=ShellSpec(cmd='"$ZMESH_SCRIPT" a b', script_uri="helper.sh"))
    req.working_dir.mkdir(parents=True)
    (req.working_dir / "helper.sh").write_text('echo "helper $1 $2"\n')
    out = await shell.run(req, RunContext())
    assert out.ok, out
    assert out.stdout_tail == "helper a b\n"


async def test_missing_script_and_empty_spec(shell: ShellPlugin, make_req: MakeReq) -> None:
    out = await shell.run(make_req(shell=ShellSpec(script_uri="nope.sh")), RunContext())
    assert out.state == "FAILED" and "script not found" in out.message
    with pytest.raises(InvalidInput):
        await shell.run(make_req(shell=ShellSpec()), RunContext())


async def test_unstartable_process(tmp_path: Path) -> None:
    out = await ProcessRun(["/nonexistent/binary"], cwd=tmp_path).run()
    assert out.state == "FAILED" and "cannot start" in out.message
    assert out.exit_code is None


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-15) == "killed by signal SIGTERM"
