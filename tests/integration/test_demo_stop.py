"""``./scripts/demo --stop``: what a ``--keep`` run left running (its agents and its web
view) stops, and the command returns once they have exited."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.procs import ProcMesh
from zambeze_mesh.cli.daemon import process_alive

DRIVER = Path(__file__).resolve().parents[2] / "scripts" / "demo_assets" / "run_demo.py"


def test_stop_stops_the_agents_and_the_web_view(tmp_path: Path) -> None:
    root = tmp_path / ".zmesh-demo"
    mesh = ProcMesh(root)
    try:
        edge = mesh.init("edge")
        edge.start()
        hpc = mesh.join("hpc", edge)
        hpc.start()
        out = edge.home / "ui.out"
        with out.open("w") as log:  # as the demo starts it
            ui = subprocess.Popen(
                [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(edge.home), "ui"],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        (edge.home / "ui.pid").write_text(str(ui.pid))
        deadline = time.monotonic() + 30
        while "?token=" not in out.read_text() and time.monotonic() < deadline:
            assert ui.poll() is None, out.read_text()
            time.sleep(0.1)
        pids = [edge.pid, hpc.pid]

        proc = subprocess.run(
            [sys.executable, str(DRIVER), "--stop"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "stopped the demo's agents and web view" in proc.stdout
        assert ui.wait(timeout=1) is not None  # gone when --stop returned
        assert not [pid for pid in pids if pid is not None and process_alive(pid)]
        assert not (edge.home / "ui.pid").exists()
        for a in (edge, hpc):
            a.pid = None
    finally:
        mesh.stop_all()
