"""PythonPlugin: script mode, function mode on the warm pool, cancel, timeout."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from tests.unit.execution.execution_helpers import MakeReq, wait_dead
from zambeze_mesh.errors import NotPermitted
from zambeze_mesh.execution import PythonPlugin, RunContext, WorkerPool
from zambeze_mesh.v1.common_pb2 import PythonSpec

# The workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_spec(func: Any, *args: Any, **kwargs: Any) -> PythonSpec:
    return PythonSpec(function=cloudpickle.dumps((func, args, kwargs)))


def divide(a: float, b: float) -> float:
    return a / b


def where_am_i(tag: str) -> dict[str, Any]:
    print("to stdout", tag)
    return {"cwd": os.getcwd(), "tag": tag, "env": os.environ.get("ZM_FN"), "pid": os.getpid()}


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


async def test_script_mode_with_args(
    python_plugin: PythonPlugin, make_req: MakeReq, tmp_path: Path
) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "import os, sys\n"
        "print('args', sys.argv[1:])\n"
        "print('cwd', os.getcwd())\n"
        "open(os.path.join(os.environ['ZMESH_OUTPUT_DIR'], 'r.txt'), 'w').write('x')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    req = make_req(python=PythonSpec(script_uri=str(script), args=["0", "b c"]))
    out = await python_plugin.run(req, RunContext())
    assert out.ok, out
    assert out.stdout_tail.splitlines() == ["args ['0', 'b c']", f"cwd {req.working_dir}"]
    assert (req.output_dir / "r.txt").read_text() == "x"

    req = make_req(
        python=PythonSpec(script_uri="file://ignored.py", args=["4"]),
        env={"ZMESH_SCRIPT": str(script)},
    )
    out = await python_plugin.run(req, RunContext())
    assert out.state == "FAILED" and out.exit_code == 4


async def test_script_exception_tail(
    python_plugin: PythonPlugin, make_req: MakeReq, tmp_path: Path
) -> None:
    script = tmp_path / "bad.py"
    script.write_text("raise ValueError('nope')\n")
    out = await python_plugin.run(make_req(python=PythonSpec(script_uri=str(script))), RunContext())
    assert out.state == "FAILED" and out.exit_code == 1
    assert "ValueError: nope" in out.stderr_tail


async def test_function_result(python_plugin: PythonPlugin, make_req: MakeReq) -> None:
    req = make_req(python=PythonSpec(**_with_env(fn_spec(where_am_i, "t1"), ZM_FN="yes")))
    out = await python_plugin.run(req, RunContext())
    assert out.ok, out
    value = cloudpickle.loads(out.result)
    assert value["cwd"] == str(req.working_dir)
    assert value["tag"] == "t1" and value["env"] == "yes"
    assert value["pid"] != os.getpid()
    assert out.stdout_tail == "to stdout t1\n"
    assert req.output_dir.is_dir()
    # Output goes to files named after the activity, only for streams that were written.
    assert (req.working_dir / f"{req.activity}.stdout.log").read_text() == "to stdout t1\n"
    assert not (req.working_dir / f"{req.activity}.stderr.log").exists()
    assert not (req.working_dir / "stdout.log").exists()
    # The worker's cwd and env are restored: a second call elsewhere sees its own.
    req2 = make_req(python=fn_spec(where_am_i, "t2"))
    value2 = cloudpickle.loads((await python_plugin.run(req2, RunContext())).result)
    assert value2["cwd"] == str(req2.working_dir) and value2["env"] is None


def _with_env(spec: PythonSpec, **env: str) -> dict[str, Any]:
    return {"function": spec.function, "env": env}


async def test_function_lambda_and_closure(python_plugin: PythonPlugin, make_req: MakeReq) -> None:
    base = 40
    out = await python_plugin.run(make_req(python=fn_spec(lambda x: x + base, 2)), RunContext())
    assert cloudpickle.loads(out.result) == 42


async def test_function_exception(python_plugin: PythonPlugin, make_req: MakeReq) -> None:
    req = make_req(python=fn_spec(divide, 1, 0))
    out = await python_plugin.run(req, RunContext())
    assert out.state == "FAILED"
    assert out.message == "ZeroDivisionError: division by zero"
    assert out.stderr_tail.startswith("Traceback (most recent call last):")
    assert "in divide" in out.stderr_tail
    assert out.result == b""
    req_err = req.working_dir / f"{req.activity}.stderr.log"
    assert req_err.read_text() == out.stderr_tail


async def test_function_timeout_respawns_worker(
    python_plugin: PythonPlugin, make_req: MakeReq
) -> None:
    pool = python_plugin.pool
    req = make_req(python=fn_spec(sleep_then, 30, 1), timeout_s=0.5)
    out = await asyncio.wait_for(python_plugin.run(req, RunContext()), 20)
    assert out.state == "FAILED"
    assert out.message == "timed out after 0.5s"
    killed = int(out.detail["worker_pid"])
    assert wait_dead([killed])
    out = await asyncio.wait_for(
        python_plugin.run(make_req(python=fn_spec(divide, 6, 3)), RunContext()), 20
    )
    assert out.ok and cloudpickle.loads(out.result) == 2
    assert killed not in pool.pids()


async def test_function_cancel_respawns_worker(
    python_plugin: PythonPlugin, make_req: MakeReq
) -> None:
    req = make_req(python=fn_spec(sleep_then, 30, 1))
    started = asyncio.Event()

    async def emit(state: str, message: str, detail: dict[str, str] | None) -> None:
        started.set()

    task = asyncio.create_task(python_plugin.run(req, RunContext(emit=emit)))
    await asyncio.wait_for(started.wait(), 20)
    await asyncio.sleep(0.2)
    assert await python_plugin.cancel("c1", req.activity, 1) is True
    out = await asyncio.wait_for(task, 10)
    assert out.state == "CANCELLED"
    assert wait_dead([int(out.detail["worker_pid"])])
    # Both workers still serve tasks, concurrently.
    reqs = [make_req(python=fn_spec(sleep_then, 0.2, i)) for i in range(4)]
    outs = await asyncio.wait_for(
        asyncio.gather(*(python_plugin.run(r, RunContext()) for r in reqs)), 20
    )
    assert [cloudpickle.loads(o.result) for o in outs] == [0, 1, 2, 3]
    assert len({o.detail["worker_pid"] for o in outs}) == 2


async def test_worker_death_is_reported(python_plugin: PythonPlugin, make_req: MakeReq) -> None:
    out = await python_plugin.run(make_req(python=fn_spec(os._exit, 3)), RunContext())
    assert out.state == "FAILED"
    assert out.message == "worker died (exit code 3)"
    out = await python_plugin.run(make_req(python=fn_spec(divide, 1, 4)), RunContext())
    assert cloudpickle.loads(out.result) == 0.25


async def test_functions_refused_when_disabled(make_req: MakeReq) -> None:
    plugin = PythonPlugin(options={"accept_functions": "false"})
    try:
        assert plugin.capabilities()["functions"] == "false"
        with pytest.raises(NotPermitted, match="does not accept shipped functions"):
            await plugin.run(make_req(python=fn_spec(divide, 1, 2)), RunContext())
        assert plugin.pool.workers == 0
    finally:
        await plugin.close()


async def test_close_stops_workers(make_req: MakeReq) -> None:
    plugin = PythonPlugin(options={"workers": 1})
    out = await plugin.run(make_req(python=fn_spec(divide, 1, 1)), RunContext())
    pids = plugin.pool.pids()
    assert out.ok and len(pids) == 1
    await plugin.close()
    assert wait_dead(pids)


def chatty() -> str:
    # Output written straight to fd 1 must land in the task's file, never in the protocol.
    os.write(1, b"raw fd1\n")
    print("printed", flush=False)
    return "done"


async def test_pool_queueing_cancel_and_output(tmp_path: Path) -> None:
    pool = WorkerPool(1)
    try:
        long = asyncio.create_task(
            pool.run(cloudpickle.dumps((sleep_then, (30, 1), {})), task_id="long")
        )
        queued = asyncio.create_task(
            pool.run(cloudpickle.dumps((sleep_then, (0, 2), {})), task_id="queued")
        )
        await asyncio.sleep(0.1)
        assert await pool.cancel("queued") is True
        assert (await asyncio.wait_for(queued, 5)).state == "cancelled"
        assert not long.done()
        assert await pool.cancel("long") is True
        assert (await asyncio.wait_for(long, 5)).state == "cancelled"
        assert await pool.cancel("long") is False
        res = await asyncio.wait_for(
            pool.run(
                cloudpickle.dumps((chatty, (), {})),
                cwd=tmp_path,
                stdout_path=tmp_path / "o.log",
                stderr_path=tmp_path / "e.log",
            ),
            20,
        )
        assert res.state == "ok" and cloudpickle.loads(res.result) == "done"
        assert (tmp_path / "o.log").read_text() == "raw fd1\nprinted\n"
        assert res.worker_ns >= res.call_ns > 0
    finally:
        await pool.close()
