"""A warm function worker: ``python -m zambeze_mesh.execution.worker [SCRATCH_DIR [TAIL]]``.

Protocol: length-prefixed pickle frames (:mod:`zambeze_mesh.execution.frames`)
on duplicates of its original stdin/stdout, one task at a time. User payloads and
return values are cloudpickle bytes inside the frames. On start it says
``("ready", pid)``; then for each task ``{"id", "fn", "cwd", "out", "err",
"env"}`` it answers ``("ok", id, result, out_tail, err_tail, call_ns, total_ns)``
or ``("err", id, summary, traceback, out_tail, err_tail, call_ns, total_ns)``
(the traceback is also written to the task's stderr). It exits at end of input.

Output capture: at start the worker creates two private scratch files
(``stdout`` and ``stderr`` in ``SCRATCH_DIR``, a directory the pool made for this
worker alone; unlinked temporary files without it). For each task it points fds
1 and 2 at them, runs the function, flushes ``sys.stdout``/``sys.stderr`` and
reads the last ``TAIL`` bytes of each (default 4096, decoded as UTF-8 with
``errors="replace"``) into the reply. Only when a file is not empty is its whole
content copied to the task's ``out`` / ``err`` path, so nothing is created (or
touched) for a silent function. A scratch file that was written (by the task,
or found written when a task starts) is replaced by a new empty one (unlink +
create): a process a function leaves running in the background keeps writing
to the old one, which no task reads. Only on a stream its function left empty
can one later task (the one running when it first writes there) catch some of
its output. If the worker dies or is killed mid-task the pool salvages the
scratch files itself.

During a task the current directory is the task's ``cwd`` and ``env`` is
applied to ``os.environ``; both are restored afterwards. Between tasks fds 1
and 2 point at the worker's original stderr and fd 0 at ``/dev/null``, so stray
prints never corrupt the protocol.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from typing import Any

import cloudpickle

from zambeze_mesh.execution.frames import FrameReader, write_frame

#: Default number of bytes of each stream returned in a reply.
DEFAULT_TAIL = 4096

SCRATCH_NAMES = ("stdout", "stderr")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def copy_fd(src: int, size: int, path: str) -> None:
    """Write the first ``size`` bytes of ``src`` to ``path`` (created or truncated;
    a symlink there is not followed)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    dst = os.open(path, flags, 0o644)
    try:
        offset = 0
        try:
            while offset < size:
                sent = os.sendfile(dst, src, offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        except OSError:
            if offset:
                raise
            while offset < size:  # no sendfile between these two files
                chunk = os.pread(src, min(1 << 20, size - offset), offset)
                if not chunk:
                    break
                os.write(dst, chunk)
                offset += len(chunk)
    finally:
        os.close(dst)


def tail_of(fd: int, size: int, limit: int) -> str:
    """The last ``limit`` of the first ``size`` bytes of ``fd``, as text."""
    if size <= 0:
        return ""
    n = min(size, limit)
    return os.pread(fd, n, size - n).decode("utf-8", errors="replace")


def keep_output(fd: int, path: str | None, limit: int) -> tuple[str, str]:
    """Copy a scratch file to ``path`` if it is not empty; return ``(tail, problem)``.

    An empty scratch file creates nothing (and leaves an existing ``path`` alone).
    """
    size = os.lseek(fd, 0, os.SEEK_END)
    if not size:
        return "", ""
    problem = ""
    if path:
        try:
            copy_fd(fd, size, path)
        except OSError as exc:
            problem = f"could not write {path}: {exc}"
    return tail_of(fd, size, limit), problem


class Capture:
    """The worker's two scratch files and the fd to restore fds 1 and 2 to between tasks."""

    def __init__(self, scratch: str | None) -> None:
        self.scratch = scratch
        self.home_err = os.dup(2)  # where fds 1 and 2 point between tasks
        self.fds = [self._new(name) for name in SCRATCH_NAMES]

    def _new(self, name: str) -> int:
        if self.scratch:
            path = os.path.join(self.scratch, name)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(path, flags, 0o600)
        with tempfile.TemporaryFile() as f:  # already unlinked: nothing to clean up
            return os.dup(f.fileno())

    def renew(self, index: int) -> None:
        """A new empty scratch file for stream ``index`` (0: stdout, 1: stderr).

        Whoever still holds the old one (a process left in the background)
        keeps writing there, never into a later task's capture.
        """
        old = self.fds[index]
        self.fds[index] = self._new(SCRATCH_NAMES[index])
        try:
            os.close(old)
        except OSError:
            pass

    def begin(self) -> None:
        """Point fds 1 and 2 at empty scratch files."""
        for index, fd in enumerate(self.fds):
            try:
                dirty = os.lseek(fd, 0, os.SEEK_END) != 0  # a stray writer, or closed
            except OSError:
                dirty = True
            if dirty:
                self.renew(index)
        os.dup2(self.fds[0], 1)
        os.dup2(self.fds[1], 2)

    def end(self) -> None:
        """Flush Python's streams and point fds 1 and 2 back at the worker's stderr."""
        _flush()
        os.dup2(self.home_err, 1)
        os.dup2(self.home_err, 2)


def run_task(task: dict[str, Any], capture: Capture, tail: int = DEFAULT_TAIL) -> tuple[Any, ...]:
    """Run one task with its cwd, output capture and env; never raises."""
    t0 = time.perf_counter_ns()
    home = os.getcwd()
    old_env: dict[str, str | None] = {}
    call_ns = 0
    reply: tuple[Any, ...]
    capture.begin()
    try:
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
        reply = ("ok", task["id"], cloudpickle.dumps(value))
    except BaseException as exc:
        # Drop this function's own frame: the user's frames are what matter.
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
        try:
            sys.stderr.write(text)
        except Exception:
            pass
        reply = ("err", task["id"], summary, text)
    finally:
        capture.end()
        for key, prev in old_env.items():
            if prev is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = prev
        try:
            os.chdir(home)
        except OSError:
            os.chdir("/")
    tails = []
    problems = []
    for index, path in enumerate((task.get("out"), task.get("err"))):
        text, problem = keep_output(capture.fds[index], path, tail)
        if text:  # it printed: the next task gets a fresh file
            capture.renew(index)
        tails.append(text)
        problems.append(problem)
    out_tail, err_tail = tails
    for problem in problems:
        if problem:
            err_tail = (err_tail + f"\n[zmesh worker: {problem}]\n")[-tail:]
    return (*reply, out_tail, err_tail, call_ns, time.perf_counter_ns() - t0)


def main(argv: list[str] | None = None) -> None:
    """Serve tasks until stdin closes; ``argv`` is ``[SCRATCH_DIR [TAIL]]``."""
    args = sys.argv[1:] if argv is None else argv
    scratch = args[0] if args and args[0] else None
    tail = int(args[1]) if len(args) > 1 else DEFAULT_TAIL
    proto_in = FrameReader(os.dup(0))
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    capture = Capture(scratch)
    write_frame(proto_out, ("ready", os.getpid()))
    while True:
        task = proto_in.read()
        if task is None:
            return
        write_frame(proto_out, run_task(task, capture, tail))


if __name__ == "__main__":
    main()
