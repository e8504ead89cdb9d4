"""Run one subprocess in its own process group, with timeout and cancel.

stdout and stderr go straight to files (``stdout.log`` / ``stderr.log`` in the
working dir by default) and the last few KiB of each become the tails of the
:class:`~zambeze_mesh.execution.model.Outcome`. Timeout and cancel signal the
whole process group (SIGTERM, then SIGKILL after a grace period), so background
grandchildren die too; processes left in the group after the main one exits are
killed as well.

When the agent itself dies (even by SIGKILL) the process it started is killed too
(``PR_SET_PDEATHSIG`` through ``setpriv``, when available): otherwise an activity of
a crashed contractor would keep running beside its re-awarded attempt.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from zambeze_mesh.execution.model import TAIL_BYTES, FinalState, Outcome

log = logging.getLogger(__name__)

STDOUT_NAME = "stdout.log"
STDERR_NAME = "stderr.log"


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file as text ("" when it does not exist).

    A symlink is not followed: an activity that swapped its log for a link to one
    of the agent's files gets nothing back.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def _open_logs(out: Path, err: Path) -> tuple[int, int]:
    # O_NOFOLLOW: a link an earlier activity left in a shared working dir must not
    # make the agent truncate a file of its own.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd_out = os.open(out, flags, 0o644)
    try:
        return fd_out, os.open(err, flags, 0o644)
    except OSError:
        os.close(fd_out)
        raise


@functools.cache
def death_guard() -> tuple[str, ...]:
    """argv prefix making the child get SIGKILL when this process dies ("" if unavailable)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        probe = subprocess.run(
            [setpriv, "--pdeathsig", "KILL", "--", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if probe.returncode == 0 else ()


def _executable(name: str, env: Mapping[str, str] | None) -> str:
    """``name`` resolved as ``execvp`` would; OSError when it cannot be run."""
    path = name if "/" in name else shutil.which(name, path=(env or os.environ).get("PATH"))
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "no such executable", name)
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, "not executable", name)
    return path


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def describe_exit(code: int) -> str:
    """``"exit code N"`` or ``"killed by signal SIGX"`` for a return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}"
    return f"exit code {code}"


class ProcessRun:
    """One subprocess run: ``await run()`` once; ``await cancel()`` from elsewhere.

    ``on_start`` is awaited with the pid once the process exists.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        grace_s: float = 2.0,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        tail_bytes: int = TAIL_BYTES,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.timeout_s = timeout_s if timeout_s and timeout_s > 0 else None
        self.grace_s = grace_s
        self.stdout_path = stdout_path or cwd / STDOUT_NAME
        self.stderr_path = stderr_path or cwd / STDERR_NAME
        self.tail_bytes = tail_bytes
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._cancel = asyncio.Event()
        self._done = asyncio.Event()
        self._started = False

    async def run(self, on_start: Callable[[int], Awaitable[None]] | None = None) -> Outcome:
        """Start the process, wait for it to end (or time out / be cancelled)."""
        if self._started:
            raise RuntimeError("ProcessRun.run() called twice")
        self._started = True
        try:
            return await self._run(on_start)
        finally:
            self._done.set()

    async def cancel(self) -> bool:
        """Kill the process group; True if the run had not finished yet."""
        if self._done.is_set():
            return False
        self._cancel.set()
        if self._started:
            await self._done.wait()
        return True

    async def _run(self, on_start: Callable[[int], Awaitable[None]] | None) -> Outcome:
        if self._cancel.is_set():
            return Outcome("CANCELLED", message="cancelled before start")
        t0 = time.monotonic()
        try:
            out, err = _open_logs(self.stdout_path, self.stderr_path)
        except OSError as exc:
            return Outcome("FAILED", message=f"cannot open output files: {exc}")
        try:
            argv = self.argv
            guard = death_guard()
            if guard:  # setpriv would only fail later, with exit code 127
                argv = [_executable(argv[0], self.env), *argv[1:]]
            proc = await asyncio.create_subprocess_exec(
                *guard,
                *argv,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            return Outcome("FAILED", message=f"cannot start {self.argv[0]!r}: {exc}")
        finally:
            os.close(out)
            os.close(err)
        self._proc = proc
        self.pid = proc.pid
        try:
            if on_start is not None:
                await on_start(proc.pid)
            reason = await self._wait(proc)
        except BaseException:
            kill_group(proc.pid, signal.SIGKILL)
            raise
        # Whatever is left in the group (background children) goes too.
        kill_group(proc.pid, signal.SIGKILL)
        code = proc.returncode
        detail = {
            "pid": str(proc.pid),
            "duration_s": f"{time.monotonic() - t0:.3f}",
            "stdout_path": str(self.stdout_path),
            "stderr_path": str(self.stderr_path),
        }
        if code is not None:
            detail["exit_code"] = str(code)
        out_tail = read_tail(self.stdout_path, self.tail_bytes)
        err_tail = read_tail(self.stderr_path, self.tail_bytes)
        if reason == "cancelled":
            return Outcome("CANCELLED", code, "cancelled", out_tail, err_tail, detail=detail)
        if reason == "timeout":
            msg = f"timed out after {self.timeout_s:g}s"
            return Outcome("FAILED", code, msg, out_tail, err_tail, detail=detail)
        assert code is not None
        state: FinalState = "SUCCEEDED" if code == 0 else "FAILED"
        return Outcome(state, code, describe_exit(code), out_tail, err_tail, detail=detail)

    async def _wait(self, proc: asyncio.subprocess.Process) -> str:
        """Wait for exit, timeout or cancel; returns "exited", "timeout" or "cancelled"."""
        waiter = asyncio.ensure_future(proc.wait())
        canceller = asyncio.ensure_future(self._cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, canceller}, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            canceller.cancel()
        if waiter in done:
            return "exited"
        reason = "cancelled" if canceller in done else "timeout"
        log.info("terminating process group %d (%s)", proc.pid, reason)
        kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.grace_s)
        except TimeoutError:
            kill_group(proc.pid, signal.SIGKILL)
            await waiter
        return reason


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    grace_s: float = 2.0,
) -> Outcome:
    """Run ``argv`` to completion (see :class:`ProcessRun`)."""
    run = ProcessRun(argv, cwd=cwd, env=env, timeout_s=timeout_s, grace_s=grace_s)
    return await run.run()
