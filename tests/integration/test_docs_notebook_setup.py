"""The quickstart notebook's own instructions, run as written: its setup commands start
a real agent, then its documented run command (`jupyter execute`) executes it headless."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.ports import free_port_pair

pytest.importorskip("nbclient", reason="needs nbclient (install the `notebook` extra)")
pytest.importorskip("ipykernel", reason="needs ipykernel (install the `notebook` extra)")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "scripts" / "notebooks" / "quickstart.ipynb"


def _blocks() -> list[str]:
    intro = "".join(json.loads(NOTEBOOK.read_text())["cells"][0]["source"])
    return re.findall(r"```sh\n(.*?)```", intro, re.S)


def test_notebook_extra_lists_what_the_notebook_needs() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^notebook = \[(.*)\]$", text, re.M)
    assert extra, "pyproject.toml has no `notebook` extra"
    for dep in ("ipykernel", "nbclient", "nbformat"):
        assert dep in extra.group(1)
    assert "pip install '.[notebook]'" in _blocks()[1]


def test_notebook_setup_and_run_commands_work_as_written(tmp_path: Path) -> None:
    setup, run = _blocks()
    assert setup.startswith("zmesh init ") and "--listen 127.0.0.1:7700" in setup
    # as written, on a free port (7700 may be taken on a shared machine)
    setup = setup.replace("127.0.0.1:7700", f"127.0.0.1:{free_port_pair()}")
    home = tmp_path / "home"
    env = {
        **os.environ,
        "ZMESH_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    try:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", setup],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "agent started" in proc.stdout
        commands = [ln for ln in run.splitlines() if not ln.startswith("pip install")]
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(commands)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # no cell failed
        listed = subprocess.run(
            [sys.executable, "-m", "zambeze_mesh.cli.main", "campaigns", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        states = {c["name"]: c["state"] for c in json.loads(listed.stdout)}
        assert states == {"notebook quickstart": "SUCCEEDED", "notebook async": "SUCCEEDED"}
    finally:
        subprocess.run(
            [sys.executable, "-m", "zambeze_mesh.cli.main", "agent", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
