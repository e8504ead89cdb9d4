"""WorkerPool output capture and protocol, with real worker processes.

Shipped functions of a campaign share one working dir: their output must stay apart.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from tests.unit.execution.execution_helpers import wait_dead
from zambeze_mesh.execution import TAIL_BYTES, PythonPlugin, RunContext, RunRequest, WorkerPool
from zambeze_mesh.execution.frames import FrameReader, encode
from zambeze_mesh.execution.python import log_name
from zambeze_mesh.v1 import common_pb2

# The workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def blob(func: Any, *args: Any, **kwargs: Any) -> bytes:
    return cloudpickle.dumps((func, args, kwargs))


def shared_req(root: Path, activity: str, func: Any, *args: Any, attempt: int = 1) -> RunRequest:
    """A function activity in the campaign-wide functions dir, as the agent stages it."""
    spec = common_pb2.ActivitySpec(
        name=activity, python=common_pb2.PythonSpec(function=blob(func, *args))
    )
    work = root / "runs" / "c1" / "functions"
    return RunRequest("c1", activity, attempt, "python", spec, work, work / "output", root)


def chatter(tag: str, lines: int) -> tuple[float, float]:
    start = time.monotonic()
    for i in range(lines):
        print(f"{tag} out {i}", flush=True)
        sys.stderr.write(f"{tag} err {i}\n")
        sys.stderr.flush()
        time.sleep(0.002)
    return start, time.monotonic()


def big_output(n: int) -> int:
    for i in range(n):
        print(f"line {i:06d} " + "x" * 40)
    os.write(2, b"E" * 10_000 + b"\nerr-end\n")
    return n


def silent(x: int) -> int:
    return x * 2


def maybe_print(text: str) -> str:
    if text:
        print(text)
    return text


def leave_a_chatty_thread(delay: float, done: str) -> str:
    def later() -> None:
        time.sleep(delay)
        for i in range(200):
            print(f"stray print {i}", flush=True)
            os.write(1, b"stray raw write\n")
            os.write(2, b"stray raw stderr\n")
        Path(done).touch()

    threading.Thread(target=later, daemon=True).start()
    return "left"


def print_then_sleep(seconds: float) -> None:
    print("started", flush=True)
    sys.stderr.write("warming up\n")
    sys.stderr.flush()
    time.sleep(seconds)


def print_then_die(code: int) -> None:
    print("last words", flush=True)
    os._exit(code)


def from_subprocess() -> int:
    return subprocess.run(["sh", "-c", "echo from child; echo child err >&2"]).returncode


def start_background_printer(delay: float, say: str) -> int:
    if say:
        print(say, flush=True)
    cmd = f"sleep {delay}; echo background out; echo background err >&2"
    return subprocess.Popen(["sh", "-c", cmd]).pid


def echo_bytes(data: bytes) -> bytes:
    return data[::-1]


def utf8_cut() -> None:
    sys.stdout.write("é" * 3000 + "\n")  # 6001 bytes: the tail starts inside a character


@pytest.fixture
async def pool(tmp_path: Path) -> Any:
    p = WorkerPool(2, tail_bytes=TAIL_BYTES, scratch_root=tmp_path / "scratch")
    (tmp_path / "scratch").mkdir()
    yield p
    await p.close()


async def test_concurrent_functions_in_one_dir_keep_their_own_output(tmp_path: Path) -> None:
    plugin = PythonPlugin(options={"workers": 2})
    try:
        await asyncio.gather(*(plugin.pool.run(blob(time.sleep, 0.1)) for _ in range(2)))
        # "a b" and "a_b" would share a file under a naive safe name.
        reqs = [shared_req(tmp_path, name, chatter, name, 60) for name in ("a b", "a_b")]
        outs = await asyncio.wait_for(
            asyncio.gather(*(plugin.run(r, RunContext()) for r in reqs)), 60
        )
    finally:
        await plugin.close()
    (s1, e1), (s2, e2) = (cloudpickle.loads(o.result) for o in outs)
    assert s1 < e2 and s2 < e1, "the two functions did not overlap"
    work = reqs[0].working_dir
    assert reqs[1].working_dir == work
    names = {log_name("a b"), log_name("a_b")}
    assert len(names) == 2
    for req, out in zip(reqs, outs, strict=True):
        assert out.ok, out
        tag = req.activity
        expected_out = "".join(f"{tag} out {i}\n" for i in range(60))
        expected_err = "".join(f"{tag} err {i}\n" for i in range(60))
        name = log_name(tag)
        assert (work / f"{name}.stdout.log").read_text() == expected_out
        assert (work / f"{name}.stderr.log").read_text() == expected_err
        assert out.stdout_tail == expected_out[-TAIL_BYTES:]
        assert out.stderr_tail == expected_err[-TAIL_BYTES:]
    assert not (work / "stdout.log").exists()


async def test_tails_of_big_output_are_the_last_bytes(pool: WorkerPool, tmp_path: Path) -> None:
    out_path, err_path = tmp_path / "big.stdout.log", tmp_path / "big.stderr.log"
    res = await asyncio.wait_for(
        pool.run(blob(big_output, 5000), stdout_path=out_path, stderr_path=err_path), 60
    )
    assert res.state == "ok" and cloudpickle.loads(res.result) == 5000
    full = "".join(f"line {i:06d} " + "x" * 40 + "\n" for i in range(5000))
    assert out_path.read_text() == full
    assert res.stdout_tail == full[-TAIL_BYTES:]
    assert len(res.stdout_tail.encode()) == TAIL_BYTES
    err = "E" * 10_000 + "\nerr-end\n"
    assert err_path.read_text() == err
    assert res.stderr_tail == err[-TAIL_BYTES:]
    # The next task starts with empty capture files.
    res = await asyncio.wait_for(pool.run(blob(maybe_print, "small")), 20)
    assert (res.stdout_tail, res.stderr_tail) == ("small\n", "")


async def test_tail_cut_inside_a_character_is_replaced(pool: WorkerPool) -> None:
    res = await asyncio.wait_for(pool.run(blob(utf8_cut)), 20)
    assert res.state == "ok"
    assert res.stdout_tail == "\ufffd" + "é" * 2047 + "\n"


async def test_silent_function_creates_no_file(tmp_path: Path) -> None:
    plugin = PythonPlugin(options={"workers": 1})
    try:
        req = shared_req(tmp_path, "quiet one", silent, 21)
        out = await asyncio.wait_for(plugin.run(req, RunContext()), 20)
        assert out.ok and cloudpickle.loads(out.result) == 42
        assert (out.stdout_tail, out.stderr_tail) == ("", "")
        assert sorted(p.name for p in req.working_dir.iterdir()) == ["output"]
        # A retry that is silent does not leave the first attempt's log behind.
        first = shared_req(tmp_path, "flaky", maybe_print, "attempt 1")
        assert (await plugin.run(first, RunContext())).stdout_tail == "attempt 1\n"
        log = req.working_dir / f"{log_name('flaky')}.stdout.log"
        assert log.read_text() == "attempt 1\n"
        retry = shared_req(tmp_path, "flaky", maybe_print, "", attempt=2)
        assert (await plugin.run(retry, RunContext())).ok
        assert not log.exists()
    finally:
        await plugin.close()


async def test_prints_between_tasks_do_not_corrupt_the_protocol(
    pool: WorkerPool, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    done = tmp_path / "thread-done"
    res = await asyncio.wait_for(pool.run(blob(leave_a_chatty_thread, 0.2, str(done))), 20)
    assert res.state == "ok" and cloudpickle.loads(res.result) == "left"
    pid = res.worker_pid
    for _ in range(200):  # the thread prints while the worker waits for a task
        if done.exists():
            break
        await asyncio.sleep(0.05)
    assert done.exists()
    for i in range(20):
        res = await asyncio.wait_for(pool.run(blob(silent, i)), 20)
        assert res.state == "ok" and cloudpickle.loads(res.result) == 2 * i
        assert res.worker_pid == pid
        assert res.stdout_tail == ""
    # What was printed between tasks went to the worker's own stderr.
    assert "stray print 199" in capfd.readouterr().err


async def test_output_of_a_child_process_is_captured(pool: WorkerPool, tmp_path: Path) -> None:
    res = await asyncio.wait_for(pool.run(blob(from_subprocess)), 20)
    assert res.state == "ok" and cloudpickle.loads(res.result) == 0
    assert (res.stdout_tail, res.stderr_tail) == ("from child\n", "child err\n")


@pytest.mark.parametrize("say", ["", "spawner prints"])
async def test_background_output_stays_out_of_later_tasks(say: str) -> None:
    pool = WorkerPool(1)  # every task on the same worker
    try:
        await _background_case(pool, say)
    finally:
        await pool.close()


async def _background_case(pool: WorkerPool, say: str) -> None:
    res = await asyncio.wait_for(pool.run(blob(start_background_printer, 0.3, say)), 20)
    assert res.state == "ok" and res.stdout_tail == (f"{say}\n" if say else "")
    child = cloudpickle.loads(res.result)
    if say:
        # It writes during this task: its stdout file was replaced (the spawner printed);
        # its stderr (left empty by the spawner) is caught by this one task only.
        res = await asyncio.wait_for(pool.run(blob(time.sleep, 0.8)), 20)
        assert res.state == "ok" and res.stdout_tail == ""
        assert res.stderr_tail in ("", "background err\n")
    assert wait_dead([child], timeout=20)  # whatever it wrote since, it wrote between tasks
    for _ in range(2):
        res = await asyncio.wait_for(pool.run(blob(silent, 1)), 20)
        assert res.state == "ok" and (res.stdout_tail, res.stderr_tail) == ("", "")


async def test_timeout_keeps_what_the_function_printed(pool: WorkerPool, tmp_path: Path) -> None:
    out_path = tmp_path / "slow.stdout.log"
    res = await asyncio.wait_for(
        pool.run(blob(print_then_sleep, 30), stdout_path=out_path, timeout_s=2), 20
    )
    assert res.state == "timeout"
    assert (res.stdout_tail, res.stderr_tail) == ("started\n", "warming up\n")
    assert out_path.read_text() == "started\n"
    assert wait_dead([res.worker_pid])


async def test_dead_worker_keeps_output_and_exit_code(pool: WorkerPool) -> None:
    res = await asyncio.wait_for(pool.run(blob(print_then_die, 5)), 20)
    assert res.state == "died"
    assert res.summary == "worker died (exit code 5)"
    assert res.stdout_tail == "last words\n"
    res = await asyncio.wait_for(pool.run(blob(silent, 4)), 20)
    assert res.state == "ok" and cloudpickle.loads(res.result) == 8


async def test_big_frames_both_ways(pool: WorkerPool) -> None:
    data = os.urandom(3 << 20)  # bigger than a pipe buffer: partial writes and reads
    res = await asyncio.wait_for(pool.run(blob(echo_bytes, data)), 60)
    assert res.state == "ok" and cloudpickle.loads(res.result) == data[::-1]


async def test_scratch_dirs_are_private_and_removed(pool: WorkerPool, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    await asyncio.gather(*(pool.run(blob(time.sleep, 0.2)) for _ in range(2)))
    dirs = sorted(scratch.iterdir())
    assert len(dirs) == 2
    assert all(d.stat().st_mode & 0o777 == 0o700 for d in dirs)
    res = await asyncio.wait_for(pool.run(blob(time.sleep, 30), timeout_s=0.2), 20)
    assert res.state == "timeout"
    for _ in range(400):  # the replacement starts in the background
        if len(list(scratch.iterdir())) == 2 and pool.workers == 2:
            break
        await asyncio.sleep(0.05)
    assert len(list(scratch.iterdir())) == 2 and not set(dirs) <= set(scratch.iterdir())
    await pool.close()
    assert list(scratch.iterdir()) == []


def test_worker_without_scratch_dir_uses_unlinked_files(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": root, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zambeze_mesh.execution.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        reader = FrameReader(proc.stdout.fileno())
        assert reader.read() == ("ready", proc.pid)
        task = {"id": 7, "fn": blob(maybe_print, "hi"), "cwd": None, "out": None, "err": None}
        proc.stdin.write(encode(task))
        proc.stdin.flush()
        reply = reader.read()
        assert reply[:2] == ("ok", 7) and reply[3:5] == ("hi\n", "")
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("plain-name_1.x", "plain-name_1.x"),
        ("a b", None),
        ("../up", None),
        ("", None),
        ("...", None),
        ("-rf", None),
    ],
)
def test_log_name_is_safe(name: str, expect: str | None) -> None:
    safe = log_name(name)
    if expect is not None:
        assert safe == expect
    assert safe and "/" not in safe and not safe.startswith((".", "-"))
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in safe)


def test_log_names_stay_distinct_and_short() -> None:
    names = ["a b", "a_b", "a/b", "a:b", "é", "e", "x" * 300, "x" * 301]
    safe = [log_name(n) for n in names]
    assert len(set(safe)) == len(names)
    assert max(len(s) for s in safe) <= 120


async def _until(cond: Any, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_spare_jail_keeps_one_worker_started_ahead(tmp_path: Path) -> None:
    """A jail with ``spare`` (the agent's per-owner function workers): after its first
    task the pool starts one more worker of that jail, so two tasks at once both run
    in workers that were already up; a jail without it gets no spare."""
    from zambeze_mesh.execution.sandbox import Jail

    (tmp_path / "scratch").mkdir()
    pool = WorkerPool(3, scratch_root=tmp_path / "scratch")
    owner = Jail((), (), (str(tmp_path / "owner"),), spare=True)
    try:
        first = await pool.run(blob(os.getpid), sandbox=owner)
        assert first.state == "ok"
        await _until(lambda: pool.workers == 2)
        warm = set(pool.pids())
        both = await asyncio.gather(
            *(pool.run(blob(time.sleep, 0.3), sandbox=owner) for _ in range(2))
        )
        assert [r.state for r in both] == ["ok", "ok"]
        assert {r.worker_pid for r in both} == warm  # no task waited for a start
        assert pool.workers <= pool.size
    finally:
        await pool.close()
    plain_pool = WorkerPool(3, scratch_root=tmp_path / "scratch")
    plain = Jail((), (), (str(tmp_path / "campaign"),))
    try:
        assert (await plain_pool.run(blob(os.getpid), sandbox=plain)).state == "ok"
        await asyncio.sleep(0.5)
        assert plain_pool.workers == 1
    finally:
        await plain_pool.close()
