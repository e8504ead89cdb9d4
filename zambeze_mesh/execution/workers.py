"""A pool of warm Python worker processes for function activities.

Each worker is ``python -m zambeze_mesh.execution.worker SCRATCH_DIR TAIL`` in
its own session, speaking length-prefixed pickle frames over two pipes that
become its stdin/stdout (see :mod:`zambeze_mesh.execution.worker` for the
messages). The pool keeps its ends of the pipes as raw non-blocking fds: a task
frame goes out with one ``write`` (the rest, if the pipe is full, when it is
writable again) and replies are read by an ``add_reader`` callback that resolves
the waiting task's future, so a round trip costs two pipe writes, two reads and
one event-loop wake-up.

With a sandbox (:class:`~zambeze_mesh.execution.sandbox.Jail`) a worker starts
inside it once and then serves every task with the same jail key (for the agent:
the shipped functions of one campaign); a task with another key gets another
worker, an idle worker of another key being stopped first when the pool is full.
A jail with ``spare`` set (for the agent: the workers of one campaign owner) also
gets one more worker started in the background when it has no idle worker left
and the pool has room, so the next task of that key finds a warm one even while
the first is busy.

Workers start lazily, one per concurrent task up to ``size`` (a semaphore: a
worker never runs more than one task and no task is sent ahead to a busy
worker), and are kept. Each worker captures its tasks' stdout/stderr in two
scratch files in a private directory the pool made for it (under
``scratch_root``, removed when the worker is stopped or replaced); the tails
come back in the reply (:attr:`TaskResult.stdout_tail` /
:attr:`TaskResult.stderr_tail`) and the full output is copied to the task's
``stdout_path`` / ``stderr_path`` only when there is some.

A task that is cancelled or times out kills its worker's whole process group;
the pool then salvages the tails and output of that task from the worker's
scratch files, and a fresh worker is started in its place in the background. A
worker that dies mid-task gives state ``died`` with its exit code. The parent
never unpickles the shipped function: it forwards the bytes and gets the
cloudpickled return value back as bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zambeze_mesh.errors import FailedPrecondition, Unavailable
from zambeze_mesh.execution.frames import READ_CHUNK, FrameBuffer, encode
from zambeze_mesh.execution.process import death_guard
from zambeze_mesh.execution.sandbox import Jail, scrub_env
from zambeze_mesh.execution.worker import DEFAULT_TAIL, SCRATCH_NAMES, keep_output

log = logging.getLogger(__name__)

TaskState = Literal["ok", "error", "cancelled", "timeout", "died"]

#: How long a killed worker is given to exit before its scratch files are read.
SALVAGE_WAIT_S = 2.0


@dataclass
class TaskResult:
    """How one function call in a worker ended.

    ``result`` is the cloudpickled return value (state ``ok``); ``summary`` is
    ``"Type: message"`` and ``traceback`` the formatted traceback (state
    ``error``); ``stdout_tail`` / ``stderr_tail`` are the last bytes of what the
    call wrote (decoded with ``errors="replace"``); ``call_ns`` is the time
    inside the function and ``worker_ns`` the time the worker spent on the
    whole task.
    """

    state: TaskState
    result: bytes = b""
    summary: str = ""
    traceback: str = ""
    call_ns: int = 0
    worker_ns: int = 0
    worker_pid: int = 0
    stdout_tail: str = ""
    stderr_tail: str = ""


class _WorkerGone(Exception):
    """The worker closed its pipe or could not be written to."""


def _worker_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = scrub_env(dict(os.environ))
    root = str(Path(__file__).resolve().parents[2])
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


def _salvage(scratch: Path, out: str | None, err: str | None, limit: int) -> tuple[str, str]:
    """Tails (and output files) of a task whose worker was killed, from its scratch files."""
    tails = []
    for name, path in zip(SCRATCH_NAMES, (out, err), strict=True):
        try:
            fd = os.open(scratch / name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            tails.append("")
            continue
        try:
            tail, problem = keep_output(fd, path, limit)
        finally:
            os.close(fd)
        if problem:
            log.warning("function output: %s", problem)
        tails.append(tail)
    return tails[0], tails[1]


class _Worker:
    """One worker process, our ends of its pipes and its scratch dir."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        rfd: int,
        wfd: int,
        scratch: Path,
        jail: Jail | None = None,
    ) -> None:
        self.proc = proc
        self.jail = jail
        self.jail_key: Hashable = jail.key if jail is not None else None
        self.pid = proc.pid
        self.scratch = scratch
        self._loop = asyncio.get_running_loop()
        self._rfd = rfd
        self._wfd = wfd
        self._frames = FrameBuffer()
        self._waiter: asyncio.Future[Any] | None = None
        self._unsent: memoryview | None = None
        self.gone = False  # pipe closed: no more replies
        self._closed = False
        self._loop.add_reader(rfd, self._on_readable)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self.gone

    def next_frame(self) -> asyncio.Future[Any]:
        """A future for the next frame the worker sends (fails with _WorkerGone)."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self.gone:
            fut.set_exception(_WorkerGone("worker pipe closed"))
        else:
            self._waiter = fut
        return fut

    def request(self, frame: bytes) -> asyncio.Future[Any]:
        """Send one frame; a future for the reply."""
        fut = self.next_frame()
        if fut.done():
            return fut
        try:
            sent = os.write(self._wfd, frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(_WorkerGone(f"cannot write to worker: {exc}"))
            return fut
        if sent < len(frame):
            self._unsent = memoryview(frame)[sent:]
            self._loop.add_writer(self._wfd, self._on_writable)
        return fut

    def _on_writable(self) -> None:
        data = self._unsent
        if data is None:
            self._loop.remove_writer(self._wfd)
            return
        try:
            sent = os.write(self._wfd, data)
        except BlockingIOError:
            return
        except OSError as exc:
            self._unsent = None
            self._loop.remove_writer(self._wfd)
            self._fail(_WorkerGone(f"cannot write to worker: {exc}"))
            return
        if sent < len(data):
            self._unsent = data[sent:]
        else:
            self._unsent = None
            self._loop.remove_writer(self._wfd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._rfd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._set_gone("worker pipe closed")
            return
        try:
            frames = self._frames.feed(data)
        except Exception as exc:
            self._set_gone(f"bad frame from worker: {exc!r}")
            return
        for obj in frames:
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(obj)
            else:
                log.debug("function worker %d: reply to a stopped task dropped", self.pid)

    def _set_gone(self, why: str) -> None:
        self.gone = True
        self._loop.remove_reader(self._rfd)
        if self._unsent is not None:
            self._unsent = None
            self._loop.remove_writer(self._wfd)
        self._fail(_WorkerGone(why))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close_pipes(self) -> None:
        """Stop watching and close our ends of the pipes (the worker sees EOF)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._rfd)
        self._loop.remove_writer(self._wfd)
        self.gone = True
        self._fail(_WorkerGone("worker pipes closed"))
        os.close(self._wfd)
        os.close(self._rfd)

    def signal_group(self) -> None:
        """SIGKILL the worker's whole process group."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def kill(self) -> None:
        """Kill the worker's process group and reap the worker."""
        self.signal_group()
        self.close_pipes()
        await self.proc.wait()

    def remove_scratch(self) -> None:
        """Delete the worker's scratch dir."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    async def stop(self) -> None:
        """Close stdin (the worker exits at EOF); kill it if it lingers."""
        self.close_pipes()
        try:
            await asyncio.wait_for(self.proc.wait(), 1.0)
        except TimeoutError:
            await self.kill()
        else:
            # Also reap anything the worker left in its group.
            self.signal_group()
        self.remove_scratch()


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
    """Up to ``size`` warm workers; :meth:`run` calls a shipped function in one.

    ``tail_bytes`` is how much of each output stream a :class:`TaskResult`
    carries; ``scratch_root`` is where the workers' private scratch dirs go
    (the system temp dir by default).
    """

    def __init__(
        self,
        size: int = 2,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
        tail_bytes: int = DEFAULT_TAIL,
        scratch_root: Path | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self.python = python
        self.start_timeout_s = start_timeout_s
        self.tail_bytes = tail_bytes
        self.scratch_root = scratch_root
        self._env = _worker_env(env)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._sem: asyncio.Semaphore | None = None
        self._pending: dict[Hashable, _Pending] = {}
        self._respawns: set[asyncio.Task[None]] = set()
        self._spares: set[Hashable] = set()  # jail keys with a spare being started
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def workers(self) -> int:
        """Live worker processes (idle or busy)."""
        return sum(1 for w in (*self._idle, *self._busy) if w.alive)

    def pids(self) -> list[int]:
        """Pids of the live workers."""
        return [w.pid for w in (*self._idle, *self._busy) if w.alive]

    async def _spawn(self, jail: Jail | None = None) -> _Worker:
        scratch = Path(tempfile.mkdtemp(prefix="zmesh-worker-", dir=self.scratch_root))
        prefix: list[str] = []
        if jail is not None:
            jail.hand_over(scratch)
            prefix = jail.prefix(extra_rw=[scratch])
        child_in, to_worker = os.pipe()
        from_worker, child_out = os.pipe()
        try:
            # death_guard: the worker gets SIGKILL if the agent dies (a running
            # function would otherwise outlive it until it returns).
            proc = await asyncio.create_subprocess_exec(
                *death_guard(),
                *prefix,
                self.python,
                "-m",
                "zambeze_mesh.execution.worker",
                str(scratch),
                str(self.tail_bytes),
                stdin=child_in,
                stdout=child_out,
                env=self._env,
                start_new_session=True,
            )
        except BaseException:
            os.close(to_worker)
            os.close(from_worker)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        os.set_blocking(to_worker, False)
        os.set_blocking(from_worker, False)
        worker = _Worker(proc, from_worker, to_worker, scratch, jail)
        try:
            hello = await asyncio.wait_for(worker.next_frame(), self.start_timeout_s)
        except (TimeoutError, _WorkerGone) as exc:
            await worker.kill()
            worker.remove_scratch()
            raise Unavailable(f"function worker did not start: {exc!r}") from exc
        except BaseException:
            await worker.kill()
            worker.remove_scratch()
            raise
        if not (isinstance(hello, tuple) and hello and hello[0] == "ready"):
            await worker.kill()
            worker.remove_scratch()
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
        sandbox: Jail | None = None,
    ) -> TaskResult:
        """Call the cloudpickled ``(func, args, kwargs)`` in a worker.

        With ``sandbox`` the call runs in a worker started inside that jail (one
        already warm for the same jail key when there is one).
        The tails of the call's output are in the result. ``stdout_path`` /
        ``stderr_path`` receive the call's whole output when it wrote some (a
        silent stream creates no file and leaves an existing one alone). ``timeout_s``
        counts from when the task reaches a ready worker.
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
            task = {
                "id": 0,
                "fn": fn,
                "cwd": str(cwd) if cwd else None,
                "out": str(stdout_path) if stdout_path else None,
                "err": str(stderr_path) if stderr_path else None,
                "env": dict(env) if env else {},
            }
            return await self._run_in_slot(pending, task, timeout_s, sandbox)
        finally:
            pending.done.set()
            del self._pending[key]

    async def _run_in_slot(
        self,
        pending: _Pending,
        task: dict[str, Any],
        timeout_s: float | None,
        jail: Jail | None = None,
    ) -> TaskResult:
        try:
            worker = await self._take_worker(jail)
        except BaseException:
            self._release_slot()
            raise
        if pending.reason is not None:  # cancelled while the worker started
            self._idle.append(worker)
            self._release_slot()
            return TaskResult(pending.reason)
        self._busy.add(worker)
        self._top_up(jail)
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

    async def _take_worker(self, jail: Jail | None = None) -> _Worker:
        """An idle live worker of the same jail, or a new one (an idle worker of
        another jail is stopped when the pool already has ``size`` workers)."""
        key = jail.key if jail is not None else None
        for candidate in reversed(self._idle):
            if candidate.jail_key == key and candidate.alive:
                self._idle.remove(candidate)
                return candidate
        for dead in [w for w in self._idle if not w.alive]:
            self._idle.remove(dead)
            await dead.kill()
            dead.remove_scratch()
        if self._idle and len(self._idle) + len(self._busy) + len(self._spares) >= self.size:
            await self._idle.pop(0).stop()
        return await self._spawn(jail)

    def _top_up(self, jail: Jail | None) -> None:
        """Start a spare worker of ``jail`` in the background, if it asks for one, has
        no idle worker (nor a spare on the way) and the pool has room for one more."""
        if jail is None or not jail.spare or self._closed:
            return
        key = jail.key
        if key in self._spares or any(w.jail_key == key and w.alive for w in self._idle):
            return
        if self.workers + len(self._spares) >= self.size:
            return
        self._spares.add(key)

        async def spare() -> None:
            try:
                worker = await self._spawn(jail)
            except Exception as exc:
                log.warning("could not start a spare function worker: %s", exc)
                return
            finally:
                self._spares.discard(key)
            if self._closed:
                await worker.stop()
            else:
                self._idle.append(worker)

        task = asyncio.ensure_future(spare())
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _call(
        self, worker: _Worker, pending: _Pending, task: dict[str, Any], timeout_s: float | None
    ) -> TaskResult:
        reply_fut = worker.request(encode(task))
        pending.active = reply_fut
        timer = None
        if timeout_s and timeout_s > 0:
            timer = asyncio.get_running_loop().call_later(timeout_s, pending.stop, "timeout")
        state: TaskState
        try:
            reply = await reply_fut
            return self._decode(reply, worker.pid)
        except asyncio.CancelledError:
            if not _ours(pending):
                raise
            assert pending.reason is not None
            state, summary = pending.reason, ""
        except _WorkerGone:
            state, summary = "died", ""
        finally:
            pending.active = None
            if timer is not None:
                timer.cancel()
        # The task did not finish: kill the worker and keep what the call wrote.
        if state == "died":
            await worker.kill()
            summary = f"worker died (exit code {worker.proc.returncode})"
        else:
            worker.signal_group()
            await asyncio.wait([asyncio.ensure_future(worker.proc.wait())], timeout=SALVAGE_WAIT_S)
        out, err = await asyncio.to_thread(
            _salvage, worker.scratch, task["out"], task["err"], self.tail_bytes
        )
        return TaskResult(
            state, summary=summary, worker_pid=worker.pid, stdout_tail=out, stderr_tail=err
        )

    @staticmethod
    def _decode(reply: Any, pid: int) -> TaskResult:
        if reply[0] == "ok":
            _, _, result, out, err, call_ns, worker_ns = reply
            return TaskResult(
                "ok",
                result,
                call_ns=call_ns,
                worker_ns=worker_ns,
                worker_pid=pid,
                stdout_tail=out,
                stderr_tail=err,
            )
        _, _, summary, tb, out, err, call_ns, worker_ns = reply
        return TaskResult(
            "error",
            summary=summary,
            traceback=tb,
            call_ns=call_ns,
            worker_ns=worker_ns,
            worker_pid=pid,
            stdout_tail=out,
            stderr_tail=err,
        )

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start another in the background; frees the slot after."""

        async def respawn() -> None:
            try:
                await worker.kill()
                worker.remove_scratch()
                if not self._closed:
                    self._idle.append(await self._spawn(worker.jail))
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
