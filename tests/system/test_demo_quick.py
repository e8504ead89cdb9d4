"""``scripts/demo --quick --keep`` end to end: four real agents run the paper's campaign.

Runs the demo's driver (what ``./scripts/demo`` executes once the venv is ready)
with its agent homes under a temp dir, checks what landed in the repository agent's
``data/user/repository``, then runs the README's next steps as written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from zambeze_mesh.cli.daemon import process_alive

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "scripts" / "demo_assets"
DRIVER = ROOT / "scripts" / "demo_assets" / "run_demo.py"
AGENT_NAMES = ("edge", "hpc", "cluster", "repository")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None,
        reason="torch is not importable: install the demo extra (pip install -e '.[demo]')",
    ),
]


def test_quick_demo_stores_validated_models(tmp_path: Path) -> None:
    for mod in ("mlflow", "matplotlib", "distributed"):
        if importlib.util.find_spec(mod) is None:
            pytest.fail(f"torch is installed but {mod} is not: the demo extra is incomplete")
    dag = tmp_path / "dag.png"
    mesh = tmp_path / ".zmesh-demo"  # the default --root, relative to the working directory
    crate = tmp_path / "crate.zip"
    args = ["--quick", "--keep", "--graph", str(dag), "--timeout", "400", "--crate", str(crate)]
    try:
        proc = subprocess.run(
            [sys.executable, str(DRIVER), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=500,
            check=False,
        )
        logs = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        assert proc.returncode == 0, logs
        _check_results(mesh, proc.stdout, dag, logs)
        _check_crate(crate, mesh)
        _run_readme_next_steps(tmp_path, proc.stdout)
    finally:
        for name in AGENT_NAMES:
            cli = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(mesh / name)]
            subprocess.run([*cli, "agent", "stop"], capture_output=True, timeout=60, check=False)
        ui_pid = mesh / "edge" / "ui.pid"  # --keep leaves the web view running too
        if ui_pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(ui_pid.read_text().strip()), signal.SIGTERM)


def _check_results(mesh: Path, stdout: str, dag: Path, logs: str) -> None:
    repo = mesh / "repository" / "data" / "user" / "repository"
    reports = sorted(repo.rglob("validation.json"))
    assert len(reports) == 1, logs
    result = reports[0].parent
    report = json.loads(reports[0].read_text())

    # the selected models (top 2 by validation IoU, the figure reported) with their metadata
    selected = report["selected"]
    assert len(selected) == 2 and report["metric"] == "iou"
    for mid in selected:
        assert (result / "models" / f"{mid}.pt").stat().st_size > 1000
        meta = json.loads((result / "models" / f"{mid}.json").read_text())
        assert meta["hyperparameters"]["epochs"] >= 1
    ious = [m["val_iou"] for m in report["models"]]
    assert ious == sorted(ious, reverse=True) and len(ious) >= 2
    assert report["best"]["val_iou"] == max(ious)  # the headline is the best figure

    # plots and the MLflow file store with one run per trained model
    for name in ("loss_curves.png", "validation_iou.png", "best_predictions.png"):
        assert (result / "plots" / name).stat().st_size > 1000
    runs = [p for p in (result / "mlruns").glob("*/*") if (p / "metrics" / "val_iou").is_file()]
    assert len(runs) == len(report["models"])

    # the best model segments atoms better than calling everything background
    best = report["best"]
    assert best["val_iou"] > report["baseline_iou"] + 0.05, report
    assert dag.stat().st_size > 5000
    assert "succeeded" in stdout
    assert f"best model by validation iou {best['id']}: IoU {best['val_iou']:.3f}" in stdout

    # data moved between agents over tls-stream, with its rate in the event stream
    moved = [ln for ln in stdout.splitlines() if "  transfer " in ln]
    assert moved, logs
    assert all("via tls-stream" in ln and " MiB/s" in ln for ln in moved), moved


def _check_crate(crate: Path, mesh: Path) -> None:
    repo = mesh / "repository" / "data" / "user" / "repository"
    reports = sorted(repo.rglob("validation.json"))
    # the campaign's Provenance Run Crate validates (offline, required checks) and
    # records the validation report it stored, with the sha256 of the file
    from zambeze_mesh.provenance.validate import validate

    verdict = validate(crate)
    assert verdict.passed, verdict.summary()
    with zipfile.ZipFile(crate) as z:
        graph = {e["@id"]: e for e in json.loads(z.read("ro-crate-metadata.json"))["@graph"]}
    attempts = [e for k, e in graph.items() if k.startswith("#attempt-")]
    assert attempts and all(e["actionStatus"].endswith("ActionStatus") for e in attempts)
    config = [e for e in graph.values() if e.get("name") == "wf_config"]
    assert config and '"grid"' in config[0]["value"]  # the WFActivity's wf_config
    script = graph[graph["#tool-train%20ml%20models"]["isBasedOn"]["@id"]]
    assert script["identifier"].startswith("hpc:///") and script["identifier"].endswith("/train.py")
    assert script["sha256"] == hashlib.sha256((ASSETS / "train.py").read_bytes()).hexdigest()
    stored = [e for e in graph.values() if str(e.get("identifier", "")).endswith("validation.json")]
    assert stored and stored[0]["sha256"] == hashlib.sha256(reports[0].read_bytes()).hexdigest()


def _run_readme_next_steps(cwd: Path, stdout: str) -> None:
    """The README's block after ``./scripts/demo --keep``, pasted into a shell: the same
    steps the demo printed, and the last one stops the agents and the web view."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- demo-next-steps -->\n```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no demo next-steps block"
    lines = [ln.split("#")[0].strip() for ln in block.group(1).splitlines()]
    steps = [ln for ln in lines if ln and ln != "./scripts/demo --keep"]
    cid = re.search(r"zmesh status ([0-9a-f]{16})", stdout)
    assert cid, stdout[-2000:]  # the demo printed its own next steps, with the id
    printed = stdout.split("next steps:\n", 1)[1].splitlines()
    printed = [ln.strip() for ln in printed if ln.startswith("    ")]
    assert [ln.replace(cid.group(1), "ID") for ln in printed] == steps, printed
    script = "\n".join(steps).replace("zmesh status ID", f"zmesh status {cid.group(1)[:6]}")
    # the driver itself: ./scripts/demo would first make a .venv in the checkout
    script = script.replace("./scripts/demo --stop", f'"{sys.executable}" "{DRIVER}" --stop')
    mesh = cwd / ".zmesh-demo"
    pids = [int((mesh / n / "agent.pid").read_text()) for n in AGENT_NAMES]
    pids.append(int((mesh / "edge" / "ui.pid").read_text()))
    env = {k: v for k, v in os.environ.items() if k != "ZMESH_HOME"}
    env["PATH"] = "/usr/bin:/bin"  # the env file must put zmesh on PATH by itself
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in AGENT_NAMES:
        assert name in proc.stdout
    assert "SUCCEEDED" in proc.stdout and "model validation" in proc.stdout
    assert not [pid for pid in pids if process_alive(pid)], "--stop left agents or the web view"
