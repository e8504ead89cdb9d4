"""A pool of warm Python worker processes for function activities.

Each worker is ``python -m zambeze_mesh.execution.worker`` in its own session,
speaking length-prefixed frames over its stdin/stdout (see
:mod:`zambeze_mesh.execution.worker`). Workers start lazily, one per concurrent
task up to ``size``, and are kept. A task that is cancelled or times out kills
its worker's whole process group; a fresh worker is started in its place in the
background. The parent never unpickles the shipped function: it forwards the
bytes and gets the cloudpickled return value back as bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import signal
import sys
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zambeze_mesh.errors import FailedPrecondition, Unavailable
from zambeze_mesh.execution.frames import HEADER, encode

log = logging.getLogger(__name__)

TaskState = Literal["ok", "error", "cancelled", "timeout", "died"]


@dataclass
class TaskResult:
    """How one function call in a worker ended.

    ``result`` is the cloudpickled return value (state ``ok``); ``summary`` is
    ``"Type: message"`` and ``traceback`` the formatted traceback (state
    ``error``); ``call_ns`` is the time inside the function and ``worker_ns``
    the time the worker spent on the whole task.
    """

    state: TaskState
    result: bytes = b""
    summary: str = ""
    traceback: str = ""
    call_ns: int = 0
    worker_ns: int = 0
    worker_pid: int = 0


def _worker_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def send(self, obj: Any) -> None:
        self.stdin.write(encode(obj))
        await self.stdin.drain()

    async def recv(self) -> Any:
        head = await self.stdout.readexactly(HEADER.size)
        (size,) = HEADER.unpack(head)
        return pickle.loads(await self.stdout.readexactly(size))

    async def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.stdin.close()
        await self.proc.wait()

    async def stop(self) -> None:
        """Close stdin (the worker exits at EOF); kill it if it lingers."""
        self.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 1.0)
        except TimeoutError:
            await self.kill()
        else:
            # Also reap anything the worker left in its group.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass
class _Pending:
    """A task from run() to its end; ``active`` is the future it waits on."""

    reason: TaskState | None = None  # set when the pool stops the task itself
    active: asyncio.Future[Any] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, reason: TaskState) -> None:
        if self.reason is None:
            self.reason = reason
        if self.active is not None and not self.active.done():
            self.active.cancel()


def _ours(pending: _Pending) -> bool:
    """True when a CancelledError came from pending.stop(), not from our caller."""
    task = asyncio.current_task()
    return pending.reason is not None and (task is None or task.cancelling() == 0)


class WorkerPool:
    """Up to ``size`` warm workers; :meth:`run` calls a shipped function in one."""

    def __init__(
        self,
        size: int = 2,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self.python = python
        self.start_timeout_s = start_timeout_s
        self._env = _worker_env(env)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._sem: asyncio.Semaphore | None = None
        self._pending: dict[Hashable, _Pending] = {}
        self._respawns: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def workers(self) -> int:
        """Live worker processes (idle or busy)."""
        return sum(1 for w in (*self._idle, *self._busy) if w.alive)

    def pids(self) -> list[int]:
        """Pids of the live workers."""
        return [w.pid for w in (*self._idle, *self._busy) if w.alive]

    async def _spawn(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "zambeze_mesh.execution.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        worker = _Worker(proc)
        try:
            hello = await asyncio.wait_for(worker.recv(), self.start_timeout_s)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            await worker.kill()
            raise Unavailable(f"function worker did not start: {exc!r}") from exc
        if not (isinstance(hello, tuple) and hello and hello[0] == "ready"):
            await worker.kill()
            raise Unavailable(f"function worker said {hello!r} instead of ready")
        log.debug("function worker %d ready", worker.pid)
        return worker

    async def _acquire_slot(self, pending: _Pending) -> bool:
        """Wait for a free slot; False if the task was cancelled meanwhile."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.size)
        if not self._sem.locked():
            await self._sem.acquire()  # returns at once
            return True
        acquire = asyncio.ensure_future(self._sem.acquire())
        pending.active = acquire
        try:
            await acquire
        except asyncio.CancelledError:
            if _ours(pending):
                return False
            raise
        finally:
            pending.active = None
        if pending.reason is not None:
            self._sem.release()
            return False
        return True

    def _release_slot(self) -> None:
        assert self._sem is not None
        self._sem.release()

    async def run(
        self,
        fn: bytes,
        *,
        task_id: Hashable | None = None,
        cwd: Path | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> TaskResult:
        """Call the cloudpickled ``(func, args, kwargs)`` in a worker.

        ``timeout_s`` counts from when the task reaches a ready worker.
        """
        if self._closed:
            raise FailedPrecondition("worker pool is closed")
        key: Hashable = task_id if task_id is not None else ("anon", next(self._ids))
        if key in self._pending:
            raise FailedPrecondition(f"task {key!r} is already running")
        pending = _Pending()
        self._pending[key] = pending
        try:
            if not await self._acquire_slot(pending):
                return TaskResult("cancelled")
            return await self._run_in_slot(
                pending, fn, cwd, stdout_path, stderr_path, env, timeout_s
            )
        finally:
            pending.done.set()
            del self._pending[key]

    async def _run_in_slot(
        self,
        pending: _Pending,
        fn: bytes,
        cwd: Path | None,
        stdout_path: Path | None,
        stderr_path: Path | None,
        env: Mapping[str, str] | None,
        timeout_s: float | None,
    ) -> TaskResult:
        try:
            worker = await self._take_worker()
        except BaseException:
            self._release_slot()
            raise
        if pending.reason is not None:  # cancelled while the worker started
            self._idle.append(worker)
            self._release_slot()
            return TaskResult(pending.reason)
        self._busy.add(worker)
        task = {
            "id": 0,
            "fn": fn,
            "cwd": str(cwd) if cwd else None,
            "out": str(stdout_path) if stdout_path else None,
            "err": str(stderr_path) if stderr_path else None,
            "env": dict(env or {}),
        }
        healthy = False
        try:
            outcome = await self._call(worker, pending, task, timeout_s)
            healthy = outcome.state in ("ok", "error")
            return outcome
        finally:
            self._busy.discard(worker)
            if healthy:
                self._idle.append(worker)
                self._release_slot()
            else:
                self._replace(worker)

    async def _take_worker(self) -> _Worker:
        """An idle live worker, or a new one."""
        while self._idle:
            candidate = self._idle.pop()
            if candidate.alive:
                return candidate
            await candidate.kill()
        return await self._spawn()

    async def _call(
        self, worker: _Worker, pending: _Pending, task: dict[str, Any], timeout_s: float | None
    ) -> TaskResult:
        async def exchange() -> Any:
            await worker.send(task)
            return await worker.recv()

        reply_fut = asyncio.ensure_future(exchange())
        pending.active = reply_fut
        timer = None
        if timeout_s and timeout_s > 0:
            timer = asyncio.get_running_loop().call_later(timeout_s, pending.stop, "timeout")
        try:
            reply = await reply_fut
        except asyncio.CancelledError:
            if _ours(pending):
                assert pending.reason is not None
                return TaskResult(pending.reason, worker_pid=worker.pid)
            raise
        except (asyncio.IncompleteReadError, ConnectionError):
            await worker.kill()
            code = worker.proc.returncode
            return TaskResult("died", summary=f"worker died (exit code {code})")
        finally:
            pending.active = None
            if timer is not None:
                timer.cancel()
        return self._decode(reply, worker.pid)

    @staticmethod
    def _decode(reply: Any, pid: int) -> TaskResult:
        if reply[0] == "ok":
            _, _, result, call_ns, worker_ns = reply
            return TaskResult("ok", result, call_ns=call_ns, worker_ns=worker_ns, worker_pid=pid)
        _, _, summary, tb, call_ns, worker_ns = reply
        return TaskResult(
            "error",
            summary=summary,
            traceback=tb,
            call_ns=call_ns,
            worker_ns=worker_ns,
            worker_pid=pid,
        )

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start another in the background; frees the slot after."""

        async def respawn() -> None:
            try:
                await worker.kill()
                if not self._closed:
                    self._idle.append(await self._spawn())
            except Exception:
                log.exception("could not respawn a function worker")
            finally:
                self._release_slot()

        task = asyncio.ensure_future(respawn())
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def cancel(self, task_id: Hashable) -> bool:
        """Cancel a task (killing its worker); True if it was pending or running."""
        pending = self._pending.get(task_id)
        if pending is None:
            return False
        pending.stop("cancelled")
        await pending.done.wait()
        return True

    async def close(self) -> None:
        """Cancel running tasks and stop every worker."""
        self._closed = True
        for key in list(self._pending):
            await self.cancel(key)
        if self._respawns:
            await asyncio.gather(*self._respawns, return_exceptions=True)
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
