"""Shared by the benchmarks: start a mesh of real agent processes in a temp dir."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def zmesh(home: Path, *args: str, stdin: str = "") -> str:
    cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(home), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, input=stdin).stdout


@contextmanager
def process_mesh(
    n: int,
    *,
    slots: int = 2,
    labels: list[str] | None = None,
    config: dict[str, str] | None = None,
) -> Iterator[list[Path]]:
    """n agents as real processes; yields their homes (agent 0 created the mesh).

    ``config``: string settings written to every agent's config.toml before it starts.
    """
    with tempfile.TemporaryDirectory(prefix="zmesh-bench-") as tmp:
        root = Path(tmp)
        homes = []
        try:
            for i in range(n):
                home = root / f"agent-{i}"
                port = free_port_pair()
                extra = ["--slots", str(slots)]
                if labels and labels[i]:
                    extra += ["--label", labels[i]]
                if i == 0:
                    zmesh(
                        home,
                        "init",
                        "--name",
                        f"agent-{i}",
                        "--listen",
                        f"127.0.0.1:{port}",
                        *extra,
                    )
                else:
                    seed = (homes[0] / "agent.ports").read_text().split()[0]
                    token = zmesh(homes[0], "token", "create").strip()
                    zmesh(
                        home,
                        "join",
                        seed,
                        "--token-file",
                        "-",
                        "--name",
                        f"agent-{i}",
                        "--listen",
                        f"127.0.0.1:{port}",
                        *extra,
                        stdin=token,
                    )
                if config:
                    from zambeze_mesh.settings.config import AgentConfig

                    cfg = AgentConfig.load(home / "config.toml")
                    for key, value in config.items():
                        setattr(cfg, key, value)
                    cfg.save(home / "config.toml")
                zmesh(home, "agent", "start")
                homes.append(home)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                views = [json.loads(zmesh(h, "members", "--json")) for h in homes]
                if all(sum(m["status"] == "alive" for m in v) == n for v in views):
                    break
                time.sleep(0.2)
            yield homes
        finally:
            for h in homes:
                try:
                    zmesh(h, "agent", "stop")
                except subprocess.CalledProcessError:
                    pass


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]
