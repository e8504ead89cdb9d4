"""Workflow 2 (HPC): a Dask hyperparameter search over small U-Nets.

Run by the ``dask`` plugin as a WFActivity script. Inputs (``$ZMESH_INPUTS``): the
microscope images staged from the edge (a dir with ``images.npz``, ``masks.npz``,
``meta.json``) and the instrument's ``calibration.json``. The hyperparameter grid
comes from the activity's ``wf_config``::

    {"grid": {"depth": [1, 2], "base": [8], "lr": [0.003, 0.01],
              "epochs": [5], "batch_size": [8]},
     "test_fraction": 0.25, "seed": 0}

One model per combination, each trained as one Dask task (CPU, one thread).
Writes ``models/<id>.pt`` + ``models/<id>.json`` (hyperparameters, train/test
loss, IoU) and ``summary.json`` into ``$ZMESH_OUTPUT_DIR``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), os.environ.get("ZMESH_AGENT_DIR", "")):
    if _p and _p not in sys.path:
        sys.path.insert(0, _p)

import unet  # noqa: E402  (beside this script or in the agent's dir)

DEFAULT_GRID: dict[str, list[Any]] = {
    "depth": [1, 2],
    "base": [8],
    "lr": [0.003, 0.01],
    "epochs": [5],
    "batch_size": [8],
}


def wf_config() -> dict[str, Any]:
    """The activity's ``wf_config`` (``{}`` outside the mesh)."""
    try:
        import zambeze_mesh.wf as zwf
    except ImportError:  # zambeze-mesh not installed here: read what the agent sets
        return dict(json.loads(os.environ.get("ZMESH_WF_CONFIG") or "{}"))
    return zwf.config()


def dask_client() -> Any:
    """A connected ``distributed.Client``: the agent's cluster, else a small LocalCluster."""
    try:
        import zambeze_mesh.wf as zwf
    except ImportError:
        from distributed import Client

        address = os.environ.get("ZMESH_DASK_SCHEDULER")
        if address:
            return Client(address)
        workers = int(os.environ.get("ZMESH_SLOTS") or 2)
        return Client(n_workers=workers, threads_per_worker=1, dashboard_address=None)
    return zwf.dask_client()


def find_inputs(paths: Sequence[str]) -> tuple[Path, Path | None]:
    """The images dir (holding ``images.npz``) and ``calibration.json`` among the inputs."""
    images: Path | None = None
    calibration: Path | None = None
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix == ".json":
            calibration = p
        elif p.is_dir():
            found = sorted(p.rglob("images.npz"))
            if found and images is None:
                images = found[0].parent
    if images is None:
        raise SystemExit(f"no images.npz among the inputs {list(paths)}")
    return images, calibration


def combos(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order."""
    keys = sorted(grid)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def model_id(k: int, hp: Mapping[str, Any]) -> str:
    """A readable, file-safe name for the k-th model."""
    return f"m{k:02d}-d{hp['depth']}-b{hp['base']}-lr{hp['lr']:g}-e{hp['epochs']}"


def train_one(
    hp: dict[str, Any], data: dict[str, np.ndarray], n_classes: int, seed: int
) -> dict[str, Any]:
    """One Dask task: train a model and score it; returns metrics and the weights."""
    import torch

    torch.set_num_threads(1)
    test = (data["x_test"], data["y_test"])
    model, history = unet.fit(hp, data["x_train"], data["y_train"], n_classes, seed, test=test)
    train_m = unet.evaluate(model, data["x_train"], data["y_train"], n_classes)
    test_m = unet.evaluate(model, *test, n_classes)
    return {
        "hyperparameters": hp,
        "train_loss": train_m["loss"],
        "test_loss": test_m["loss"],
        "train_iou": train_m["iou"],
        "test_iou": test_m["iou"],
        "test_mse": test_m["mse"],
        "history": {k: v for k, v in history.items() if k != "seconds"},
        "seconds": round(history["seconds"], 3),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": unet.save_model(model, hp, n_classes),
    }


def split(
    images: np.ndarray, masks: np.ndarray, fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """A shuffled train/test split (at least one test image)."""
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = max(1, round(len(images) * fraction))
    te, tr = order[:n_test], order[n_test:]
    return {"x_train": images[tr], "y_train": masks[tr], "x_test": images[te], "y_test": masks[te]}


def main(argv: Sequence[str] | None = None) -> int:
    """Read inputs, train the grid on Dask, write models and the summary."""
    p = argparse.ArgumentParser(description="Dask hyperparameter search over U-Nets")
    p.add_argument("--out", help="output dir (default $ZMESH_OUTPUT_DIR)")
    p.add_argument("inputs", nargs="*", help="inputs (default $ZMESH_INPUTS)")
    args = p.parse_args(argv)
    started = time.monotonic()
    config = wf_config()
    inputs = args.inputs or [s for s in os.environ.get("ZMESH_INPUTS", "").split(os.pathsep) if s]
    images_dir, calibration_path = find_inputs(inputs)
    with np.load(images_dir / "images.npz") as f:
        images = f["images"]
    with np.load(images_dir / "masks.npz") as f:
        masks = f["masks"]
    meta = json.loads((images_dir / "meta.json").read_text())
    calibration = json.loads(calibration_path.read_text()) if calibration_path else {}
    classes = list(meta.get("classes") or ["background", *calibration.get("species", {})])
    seed = int(config.get("seed", 0))
    grid = combos(config.get("grid") or DEFAULT_GRID)
    data = split(images, masks, float(config.get("test_fraction", 0.25)), seed)
    out = Path(args.out or os.environ.get("ZMESH_OUTPUT_DIR") or "models")
    (out / "models").mkdir(parents=True, exist_ok=True)

    import cloudpickle

    cloudpickle.register_pickle_by_value(unet)  # workers need not have unet.py
    client = dask_client()
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        print(f"training {len(grid)} models on {workers} Dask workers ({len(images)} images)")
        shared = client.scatter(data, broadcast=True)
        futures = [
            client.submit(train_one, hp, shared, len(classes), seed, pure=False) for hp in grid
        ]
        results = client.gather(futures)
    finally:
        client.close()

    rows = []
    for k, (hp, res) in enumerate(zip(grid, results, strict=True)):
        mid = model_id(k, hp)
        (out / "models" / f"{mid}.pt").write_bytes(res.pop("weights"))
        doc = {"id": mid, "file": f"models/{mid}.pt", **res}
        (out / "models" / f"{mid}.json").write_text(json.dumps(doc, indent=1))
        rows.append({k2: v for k2, v in doc.items() if k2 != "history"})
        print(
            f"  {mid}: test loss {res['test_loss']:.3f}  test IoU {res['test_iou']:.3f}  "
            f"({res['seconds']:.1f} s)"
        )
    summary = {
        "models": rows,
        "classes": classes,
        "image_size": int(images.shape[-1]),
        "n_train": len(data["x_train"]),
        "n_test": len(data["x_test"]),
        "baseline_test_iou": unet.baseline_iou(data["y_test"], len(classes)),
        "source": {"images": str(images_dir), "meta_seed": meta.get("seed")},
        "calibration": calibration,
        "simulation": meta.get("calibration", {}),
        "wall_seconds": round(time.monotonic() - started, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {len(rows)} models to {out} in {summary['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
