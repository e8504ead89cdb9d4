"""Running the agent: in the foreground (signals → graceful stop) or as a daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from zambeze_mesh.agent.config import AgentConfig
from zambeze_mesh.agent.home import Home
from zambeze_mesh.agent.logs import rotate_if_large
from zambeze_mesh.errors import AlreadyExists, FailedPrecondition, Unavailable

START_TIMEOUT_S = 30.0
#: Sent by ``zmesh agent stop --leave``: gossip a graceful departure, then stop.
LEAVE_SIGNAL = signal.SIGUSR1
STOP_TIMEOUT_S = 20.0


async def run_foreground(home: Home) -> None:
    """Start the agent and serve until SIGTERM/SIGINT, then leave nothing behind."""
    from zambeze_mesh.agent.agent import Agent

    agent = Agent(home)
    await agent.start()
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


def start_background(home: Home) -> int:
    """Start ``zmesh agent start --foreground`` detached; return once it serves."""
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


def stop(home: Home, *, leave: bool = False) -> int | None:
    """Stop the agent of ``home`` (leaving the mesh first with ``leave``) and wait for it."""
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
        if home.running_pid() is None:
            return pid
        time.sleep(0.05)
    raise Unavailable(f"agent (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s")
