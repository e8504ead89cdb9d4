"""Workflow 3 (cluster): validate the trained models, track them with MLflow, keep the best.

Run as a PythonActivity script: ``python mod_select.py -metric loss [-k 2]``. Input
(``$ZMESH_INPUTS``): the training output (a dir with ``summary.json`` and
``models/``). A held-out validation set is simulated with the microscope
simulator (``mscope_sim.py``) under a different seed. Every model is scored
(cross-entropy loss, MSE, mean IoU) and recorded as an MLflow run (params,
metrics, loss curve, a prediction figure) in a local file store. The top ``k``
by ``-metric`` (``loss``, ``mse`` lower is better; ``iou`` higher is better) are
copied with ``validation.json``, the plots and ``mlruns/`` into
``$ZMESH_OUTPUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), os.environ.get("ZMESH_AGENT_DIR", "")):
    if _p and _p not in sys.path:
        sys.path.insert(0, _p)

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a plain mlruns/ dir, no server
os.environ.setdefault("MPLBACKEND", "Agg")

import mscope_sim  # noqa: E402
import unet  # noqa: E402

#: Metrics to rank by and whether higher is better.
METRICS = {"loss": False, "mse": False, "iou": True}
EXPERIMENT = "zambeze-electron-microscopy"


def find_training(paths: Sequence[str]) -> Path:
    """The training output dir (holding ``summary.json``) among the inputs."""
    for raw in paths:
        p = Path(raw)
        hits = [p] if (p / "summary.json").is_file() else sorted(p.rglob("summary.json"))
        if hits:
            return hits[0] if hits[0].is_dir() else hits[0].parent
    raise SystemExit(f"no summary.json among the inputs {list(paths)}")


def plot_predictions(
    path: Path, images: np.ndarray, masks: np.ndarray, pred: np.ndarray, title: str
) -> None:
    """Image / ground truth / prediction for the first few validation images."""
    import matplotlib.pyplot as plt

    n = min(3, len(images))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for r in range(n):
        for c, (img, name) in enumerate(
            ((images[r], "image"), (masks[r], "truth"), (pred[r], "prediction"))
        ):
            ax = axes[r][c]
            if c == 0:
                ax.imshow(img, cmap="gray")
            else:
                ax.imshow(img, cmap="viridis", vmin=0, vmax=2, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(path: Path, histories: dict[str, dict[str, list[float]]]) -> None:
    """Training and test loss per epoch of every model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mid, h in histories.items():
        (line,) = ax.plot(h.get("train_loss", []), label=f"{mid} train")
        if h.get("test_loss"):
            ax.plot(h["test_loss"], "--", color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss (dashed: test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_ranking(path: Path, rows: list[dict[str, Any]], baseline: float) -> None:
    """Validation IoU of every model against the all-background baseline."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([r["id"] for r in rows], [r["val_iou"] for r in rows], color="tab:blue")
    ax.axhline(baseline, color="tab:red", ls="--", label="all-background baseline")
    ax.set_ylabel("validation mean IoU")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Validate, track, select; see the module docstring."""
    p = argparse.ArgumentParser(description="validate models and keep the best")
    p.add_argument("-metric", "--metric", default="loss", choices=sorted(METRICS))
    p.add_argument("-k", "--top-k", type=int, default=2, help="models to keep (default 2)")
    p.add_argument("--n-val", type=int, default=24, help="validation images (default 24)")
    p.add_argument("--seed", type=int, default=2024, help="validation seed (default 2024)")
    p.add_argument("--out", help="output dir (default $ZMESH_OUTPUT_DIR)")
    p.add_argument("inputs", nargs="*", help="inputs (default $ZMESH_INPUTS)")
    args = p.parse_args(argv)
    started = time.monotonic()
    import mlflow
    import torch

    torch.set_num_threads(1)
    inputs = args.inputs or [s for s in os.environ.get("ZMESH_INPUTS", "").split(os.pathsep) if s]
    training = find_training(inputs)
    summary = json.loads((training / "summary.json").read_text())
    classes = summary["classes"]
    size = int(summary["image_size"])
    calibration = mscope_sim.load_calibration(None)  # same instrument as the training data
    calibration.update(summary.get("simulation") or summary.get("calibration") or {})
    images, masks, _ = mscope_sim.simulate(args.n_val, size, args.seed, calibration)
    baseline = unet.baseline_iou(masks, len(classes))

    out = Path(args.out or os.environ.get("ZMESH_OUTPUT_DIR") or "selected")
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
    mlflow.set_experiment(EXPERIMENT)
    rows: list[dict[str, Any]] = []
    histories: dict[str, dict[str, list[float]]] = {}
    for entry in summary["models"]:
        mid = entry["id"]
        doc = json.loads((training / "models" / f"{mid}.json").read_text())
        model, hp = unet.load_model(str(training / "models" / f"{mid}.pt"))
        scores = unet.evaluate(model, images, masks, len(classes))
        pred = unet.predict_proba(model, images).argmax(1)
        fig = plots / f"{mid}-predictions.png"
        plot_predictions(fig, images, masks, pred, f"{mid}: validation IoU {scores['iou']:.3f}")
        histories[mid] = doc.get("history", {})
        with mlflow.start_run(run_name=mid) as run:
            mlflow.log_params(hp)
            mlflow.log_metrics(
                {
                    "train_loss": doc["train_loss"],
                    "test_loss": doc["test_loss"],
                    "test_iou": doc["test_iou"],
                    "val_loss": scores["loss"],
                    "val_mse": scores["mse"],
                    "val_iou": scores["iou"],
                    "baseline_iou": baseline,
                }
            )
            for step, v in enumerate(histories[mid].get("train_loss", [])):
                mlflow.log_metric("epoch_train_loss", v, step=step)
            for step, v in enumerate(histories[mid].get("test_loss", [])):
                mlflow.log_metric("epoch_test_loss", v, step=step)
            mlflow.log_artifact(str(fig), "plots")
        rows.append(
            {
                "id": mid,
                "hyperparameters": hp,
                "val_loss": scores["loss"],
                "val_mse": scores["mse"],
                "val_iou": scores["iou"],
                "test_loss": doc["test_loss"],
                "test_iou": doc["test_iou"],
                "mlflow_run_id": run.info.run_id,
            }
        )
    key = "val_" + args.metric
    rows.sort(key=lambda r: r[key], reverse=METRICS[args.metric])
    selected = rows[: max(1, args.top_k)]
    (out / "models").mkdir(exist_ok=True)
    for r in selected:
        for ext in (".pt", ".json"):
            shutil.copy2(
                training / "models" / f"{r['id']}{ext}", out / "models" / f"{r['id']}{ext}"
            )
    plot_curves(plots / "loss_curves.png", histories)
    plot_ranking(plots / "validation_iou.png", rows, baseline)
    shutil.copy2(plots / f"{selected[0]['id']}-predictions.png", plots / "best_predictions.png")
    report = {
        "metric": args.metric,
        "top_k": len(selected),
        "validation": {"n": args.n_val, "seed": args.seed, "size": size, "classes": classes},
        "baseline_iou": baseline,
        "best": selected[0],
        "selected": [r["id"] for r in selected],
        "models": rows,
        "mlflow": {"tracking_uri": "mlruns", "experiment": EXPERIMENT},
        "wall_seconds": round(time.monotonic() - started, 2),
    }
    (out / "validation.json").write_text(json.dumps(report, indent=1))
    best = selected[0]
    print(
        f"validated {len(rows)} models on {args.n_val} new images; best by {args.metric}: "
        f"{best['id']} (IoU {best['val_iou']:.3f} vs all-background {baseline:.3f}); "
        f"kept {report['selected']} in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
