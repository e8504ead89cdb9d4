"""Running the agent: in the foreground (signals → graceful stop) or as a daemon."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time

from zambeze_mesh.errors import AlreadyExists, FailedPrecondition, Unavailable
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.home import Home
from zambeze_mesh.settings.logs import rotate_if_large

START_TIMEOUT_S = 30.0
#: Sent by ``zmesh agent stop --leave``: gossip a graceful departure, then stop.
LEAVE_SIGNAL = signal.SIGUSR1
STOP_TIMEOUT_S = 20.0


def freeze_startup_objects() -> None:
    """Keep what the agent process loaded at start out of full garbage collections.

    Modules, plugins (dask, parsl...) and the agent's own objects live as long as
    the process. Left in the oldest generation, every full collection walks them
    all and stops every thread for a few hundred ms, which happens while big
    campaigns come in; a peer whose probe is not answered in time then suspects
    this agent."""
    gc.collect()
    gc.freeze()


async def run_foreground(home: Home, ca_passphrase: bytes | None = None) -> None:
    """Start the agent and serve until SIGTERM/SIGINT, then leave nothing behind."""
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.agent.settle import settle_tasks

    agent = Agent(home, ca_passphrase=ca_passphrase)
    await agent.start()
    if agent.sandbox is not None and agent.sandbox.warning:
        print(f"WARNING: {agent.sandbox.warning}", file=sys.stderr, flush=True)
    if agent.ca_locked:
        print(
            "WARNING: the CA key is locked (encrypted, no passphrase given): joins are not signed",
            file=sys.stderr,
            flush=True,
        )
    freeze_startup_objects()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    leaving = False

    def leave() -> None:
        nonlocal leaving
        leaving = True
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(LEAVE_SIGNAL, leave)
    print(f"agent {agent.name} serving on {agent.address}", flush=True)
    await stopping.wait()
    if leaving:
        await agent.leave()
    await agent.shutdown()
    await settle_tasks()  # no CancelledError tracebacks from grpc in agent.out


def start_background(home: Home, ca_passphrase_file: str = "") -> int:
    """Start ``zmesh agent start --foreground`` detached; return once it serves.

    ``ca_passphrase_file`` is passed on (its path, never the passphrase).
    """
    home.require()
    pid = home.running_pid()
    if pid is not None:
        raise AlreadyExists(f"an agent is already running on {home.root} (pid {pid})")
    out = home.root / "agent.out"
    rotate_if_large(out, AgentConfig.load(home.config).log_max_bytes)
    if home.ports.exists():
        home.ports.unlink()
    with open(out, "ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zambeze_mesh.cli.main",
                "--home",
                str(home.root),
                "agent",
                "start",
                "--foreground",
                *(["--ca-passphrase-file", ca_passphrase_file] if ca_passphrase_file else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=fh,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if home.ports.exists() and home.socket.exists():
            return proc.pid
        code = proc.poll()
        if code is not None:
            tail = _last_error(out)
            raise FailedPrecondition(tail or f"agent exited with code {code} during start")
        time.sleep(0.05)
    proc.kill()
    raise Unavailable(f"agent did not start within {START_TIMEOUT_S:.0f} s (see {out})")


def _last_error(path: os.PathLike[str] | str) -> str:
    try:
        lines = [ln for ln in open(path, errors="replace").read().splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if ln.startswith("zmesh: error:"):
            return ln.removeprefix("zmesh: error:").strip()
    return lines[-1] if lines else ""


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists and has not exited (a zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def stop(home: Home, *, leave: bool = False) -> int | None:
    """Stop the agent of ``home`` (leaving the mesh first with ``leave``) and wait for it.

    Returns once the process has exited, not merely released the home's lock.
    """
    home.require()
    pid = home.running_pid()
    if pid is None:
        return None
    if pid > 0:
        try:
            os.kill(pid, LEAVE_SIGNAL if leave else signal.SIGTERM)
        except ProcessLookupError:
            return None
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if home.running_pid() is None and (pid <= 0 or not process_alive(pid)):
            return pid
        time.sleep(0.02)
    raise Unavailable(f"agent (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s")
