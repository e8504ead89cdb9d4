"""train.py (a Dask grid search) and mod_select.py (validation + MLflow) as the agents run them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="torch is not installed (the demo extra)")
pytest.importorskip("distributed", reason="dask[distributed] is not installed")

import mscope_sim
import train

from tests.unit.demo.conftest import ASSETS

GRID = {"depth": [1], "base": [4, 8], "lr": [0.01], "epochs": [2], "batch_size": [4]}


def _in_process_client() -> Any:
    from distributed import Client

    return Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run train.main like the dask plugin would: env vars, staged inputs."""
    images, masks, meta = mscope_sim.simulate(16, 32, seed=1)
    mscope_sim.write(tmp_path / "inputs" / "create microscope images", images, masks, meta)
    out = tmp_path / "models"
    monkeypatch.setenv(
        "ZMESH_INPUTS",
        os.pathsep.join([str(tmp_path / "inputs"), str(ASSETS / "calibration.json")]),
    )
    monkeypatch.setenv("ZMESH_OUTPUT_DIR", str(out))
    monkeypatch.setenv("ZMESH_WF_CONFIG", json.dumps({"grid": GRID, "seed": 0}))
    monkeypatch.setattr(train, "dask_client", _in_process_client)
    assert train.main([]) == 0
    return out


def test_grid_combinations_are_complete_and_named() -> None:
    combos = train.combos({"lr": [0.1, 0.2], "depth": [1, 2, 3]})
    assert len(combos) == 6 and {"lr": 0.2, "depth": 3} in combos
    assert train.model_id(3, {"depth": 2, "base": 8, "lr": 0.01, "epochs": 5}) == (
        "m03-d2-b8-lr0.01-e5"
    )


def test_find_inputs_refuses_missing_images(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        train.find_inputs([str(tmp_path)])


def test_train_writes_one_model_per_combination(trained: Path) -> None:
    summary = json.loads((trained / "summary.json").read_text())
    assert [m["hyperparameters"]["base"] for m in summary["models"]] == [4, 8]
    assert summary["classes"] == ["background", "A", "B"]
    assert summary["image_size"] == 32 and summary["n_train"] + summary["n_test"] == 16
    for m in summary["models"]:
        assert (trained / "models" / f"{m['id']}.pt").stat().st_size > 1000
        doc = json.loads((trained / "models" / f"{m['id']}.json").read_text())
        assert len(doc["history"]["train_loss"]) == 2
        assert doc["test_loss"] > 0 and 0 <= doc["test_iou"] <= 1


def test_mod_select_keeps_top_k_and_tracks_runs(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (the demo extra)")
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    import mod_select

    out = tmp_path / "selected"
    monkeypatch.setenv("ZMESH_INPUTS", str(trained.parent))  # the staged dir holding models/
    monkeypatch.setenv("ZMESH_OUTPUT_DIR", str(out))
    assert mod_select.main(["-metric", "loss", "-k", "1", "--n-val", "6"]) == 0
    report = json.loads((out / "validation.json").read_text())
    losses = [m["val_loss"] for m in report["models"]]
    assert losses == sorted(losses) and len(losses) == 2
    assert report["selected"] == [report["models"][0]["id"]] == [report["best"]["id"]]
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        f"{report['best']['id']}.json",
        f"{report['best']['id']}.pt",
    ]
    for name in ("loss_curves.png", "validation_iou.png", "best_predictions.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    runs = [p for p in (out / "mlruns").glob("*/*") if (p / "metrics" / "val_iou").is_file()]
    assert len(runs) == 2
    assert {m["mlflow_run_id"] for m in report["models"]} == {p.name for p in runs}
    params = {(p / "params" / "base").read_text().strip() for p in runs}
    assert params == {"4", "8"}
    assert 0 < report["baseline_iou"] < 0.5


def test_mod_select_iou_metric_ranks_descending(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (the demo extra)")
    import mod_select

    out = tmp_path / "by-iou"
    monkeypatch.setenv("ZMESH_OUTPUT_DIR", str(out))
    assert mod_select.main(["-metric", "iou", "-k", "2", "--n-val", "4", str(trained)]) == 0
    report = json.loads((out / "validation.json").read_text())
    ious = [m["val_iou"] for m in report["models"]]
    assert ious == sorted(ious, reverse=True) and len(report["selected"]) == 2
