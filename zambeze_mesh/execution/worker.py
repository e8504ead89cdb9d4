"""A warm function worker: ``python -m zambeze_mesh.execution.worker``.

Speaks length-prefixed frames (:mod:`zambeze_mesh.execution.frames`) on its
original stdin/stdout. User payloads and return values are
cloudpickle bytes inside the frames. On start it says ``("ready", pid)``; then
for each task ``{"id", "fn", "cwd", "out", "err", "env"}`` it answers
``("ok", id, result, call_ns, total_ns)`` or
``("err", id, summary, traceback, call_ns, total_ns)``.

During a task the current directory is the task's ``cwd``, fds 1 and 2 write to
the task's ``out`` / ``err`` files and ``env`` is applied to ``os.environ``; all
three are restored afterwards. Between tasks fd 1 points at fd 2, so stray
prints never corrupt the protocol.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

import cloudpickle

from zambeze_mesh.execution.frames import read_frame, write_frame


def _open_out(path: str | None) -> int | None:
    if not path:
        return None
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def run_task(task: dict[str, Any]) -> tuple[Any, ...]:
    """Run one task with its cwd, output files and env; never raises."""
    t0 = time.perf_counter_ns()
    old_cwd = os.getcwd()
    saved: list[tuple[int, int]] = []
    old_env: dict[str, str | None] = {}
    call_ns = 0
    reply: tuple[Any, ...]
    try:
        for fd, path in ((1, task.get("out")), (2, task.get("err"))):
            new = _open_out(path)
            if new is not None:
                saved.append((fd, os.dup(fd)))
                os.dup2(new, fd)
                os.close(new)
        for key, value in (task.get("env") or {}).items():
            old_env[key] = os.environ.get(key)
            os.environ[key] = value
        if task.get("cwd"):
            os.chdir(task["cwd"])
        func, args, kwargs = cloudpickle.loads(task["fn"])
        c0 = time.perf_counter_ns()
        try:
            value = func(*args, **kwargs)
        finally:
            call_ns = time.perf_counter_ns() - c0
        result = cloudpickle.dumps(value)
        reply = ("ok", task["id"], result, call_ns)
    except BaseException as exc:
        # Drop this function's own frame: the user's frames are what matter.
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
        sys.stderr.write(text)
        reply = ("err", task["id"], summary, text, call_ns)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in reversed(saved):
            os.dup2(old, fd)
            os.close(old)
        for key, prev in old_env.items():
            if prev is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = prev
        try:
            os.chdir(old_cwd)
        except OSError:
            os.chdir("/")
    return (*reply, time.perf_counter_ns() - t0)


def main() -> None:
    """Serve tasks until stdin closes."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    write_frame(proto_out, ("ready", os.getpid()))
    while True:
        task = read_frame(proto_in)
        if task is None:
            return
        write_frame(proto_out, run_task(task))


if __name__ == "__main__":
    main()
