"""Real ``zmesh`` processes for multi-agent tests (each agent in its own home)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.ports import free_port_pair


def zmesh(
    *args: str,
    home: Path | None = None,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``zmesh`` (as ``python -m zambeze_mesh.cli.main``) and capture its output."""
    cmd = [sys.executable, "-m", "zambeze_mesh.cli.main"]
    if home is not None:
        cmd += ["--home", str(home)]
    cmd += list(args)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"zmesh {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass
class ProcAgent:
    """One agent home driven through the CLI."""

    name: str
    home: Path
    port: int
    pid: int | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        zmesh("agent", "start", home=self.home)
        self.pid = int((self.home / "agent.pid").read_text())

    def stop(self) -> None:
        zmesh("agent", "stop", home=self.home, check=False)
        self.pid = None

    def kill9(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        self.pid = None

    def members(self) -> list[dict[str, Any]]:
        out = zmesh("members", "--json", home=self.home).stdout
        docs: list[dict[str, Any]] = json.loads(out)
        return docs

    def statuses(self) -> dict[str, str]:
        return {m["name"]: m["status"] for m in self.members()}


class ProcMesh:
    """A mesh of real agent processes on 127.0.0.1, created with init + token + join.

    ``sandbox`` is written to every agent's config (default ``"none"``: many tests
    let activities write marker files anywhere, which the default sandbox hides;
    ``""`` keeps the default of ``zmesh init``/``join``).
    """

    def __init__(self, root: Path, sandbox: str = "none") -> None:
        self.root = root
        self.sandbox = sandbox
        self.agents: dict[str, ProcAgent] = {}
        self.ca_holder: ProcAgent | None = None

    def _configure(self, a: ProcAgent) -> None:
        if not self.sandbox:
            return
        from zambeze_mesh.settings.config import AgentConfig

        path = a.home / "config.toml"
        cfg = AgentConfig.load(path)
        cfg.sandbox = self.sandbox
        cfg.save(path)

    def init(self, name: str, *extra: str) -> ProcAgent:
        port = free_port_pair()
        a = ProcAgent(name, self.root / name, port)
        zmesh("init", "--name", name, "--listen", a.address, "--mesh", "test", *extra, home=a.home)
        self._configure(a)
        self.agents[name] = a
        self.ca_holder = self.ca_holder or a
        return a

    def token(self, via: ProcAgent, ttl: str = "1h") -> str:
        return zmesh("token", "create", "--ttl", ttl, home=via.home).stdout.strip()

    def join(self, name: str, seed: ProcAgent, *extra: str, token: str | None = None) -> ProcAgent:
        port = free_port_pair()
        a = ProcAgent(name, self.root / name, port)
        tok = token or self.token(self.ca_holder or seed)  # tokens come from the CA holder
        zmesh(
            "join",
            seed.address,
            "--name",
            name,
            "--listen",
            a.address,
            *extra,
            home=a.home,
            env={"ZMESH_TOKEN": tok},  # never on the command line
        )
        self._configure(a)
        self.agents[name] = a
        return a

    def stop_all(self) -> None:
        for a in self.agents.values():
            if a.pid is not None or (a.home / "agent.pid").exists():
                a.stop()

    def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except AssertionError as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {last}")


def dispatch_script(tmp_path: Path, home: Path, source: str) -> str:
    """Run a campaign script (which prints ``CAMPAIGN <id>``) against the agent at
    ``home`` through the public Python API; the campaign id it printed."""
    script = tmp_path / "campaign_script.py"
    script.write_text(textwrap.dedent(source))
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ZMESH_HOME": str(home)},
        check=True,
    ).stdout
    return next(ln.split()[1] for ln in out.splitlines() if ln.startswith("CAMPAIGN"))
