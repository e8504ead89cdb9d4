"""A small U-Net for semantic segmentation of atom-resolved images, in plain PyTorch.

The same kind of fully convolutional encoder-decoder AtomAI trains on microscope
images: each pixel gets a class (background or an atomic species). Shared by the
training workflow (``train.py``) and the validation script (``mod_select.py``):
:func:`fit` trains one model, :func:`evaluate` scores it, :func:`save_model` and
:func:`load_model` move it through a file.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UNet",
    "baseline_iou",
    "build",
    "evaluate",
    "fit",
    "load_model",
    "mean_iou",
    "predict_proba",
    "save_model",
]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base`` filters in the first level (doubling)."""

    def __init__(self, n_classes: int = 3, depth: int = 2, base: int = 8, in_ch: int = 1) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be at least 1")
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_ch
        for w in widths[:-1]:
            self.down.append(_block(cin, w))
            cin = w
        self.bottom = _block(widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for w_hi, w in zip(reversed(widths[1:]), reversed(widths[:-1]), strict=True):
            self.ups.append(nn.ConvTranspose2d(w_hi, w, 2, stride=2))
            self.up_blocks.append(_block(2 * w, w))
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, n_classes, H, W]``; H and W must divide by 2**depth."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        out: torch.Tensor = self.head(x)
        return out


def build(hp: Mapping[str, Any], n_classes: int) -> UNet:
    """The network described by hyperparameters ``depth`` and ``base``."""
    return UNet(n_classes=n_classes, depth=int(hp.get("depth", 2)), base=int(hp.get("base", 8)))


def _inputs(images: np.ndarray) -> torch.Tensor:
    """``[n, 1, H, W]`` float tensor, each image standardized (zero mean, unit std)."""
    x = np.asarray(images, dtype=np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True) + 1e-6
    return torch.from_numpy(np.ascontiguousarray((x - mean) / std)).unsqueeze(1)


def _tensors(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = _inputs(images)
    y = torch.from_numpy(np.ascontiguousarray(masks).astype(np.int64))
    return x, y


def mean_iou(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    """Intersection over union averaged over the classes present in either map."""
    ious = []
    for c in range(n_classes):
        p, t = pred == c, truth == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


def baseline_iou(masks: np.ndarray, n_classes: int) -> float:
    """The mean IoU of the trivial model that calls every pixel background."""
    return mean_iou(np.zeros_like(masks), masks, n_classes)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Class probabilities ``[n, n_classes, H, W]`` for ``images`` ``[n, H, W]``."""
    model.eval()
    x = _inputs(images)
    out = [torch.softmax(model(x[i : i + batch]), dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def evaluate(
    model: nn.Module, images: np.ndarray, masks: np.ndarray, n_classes: int
) -> dict[str, float]:
    """Cross-entropy ``loss``, ``mse`` (probabilities vs one-hot truth) and mean ``iou``."""
    proba = predict_proba(model, images)
    onehot = np.eye(n_classes, dtype=np.float32)[masks].transpose(0, 3, 1, 2)
    picked = np.take_along_axis(proba, masks[:, None].astype(np.int64), axis=1)
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
    mse = float(((proba - onehot) ** 2).mean())
    return {"loss": loss, "mse": mse, "iou": mean_iou(proba.argmax(1), masks, n_classes)}


def fit(
    hp: Mapping[str, Any],
    images: np.ndarray,
    masks: np.ndarray,
    n_classes: int,
    seed: int = 0,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[UNet, dict[str, Any]]:
    """Train one model with Adam on cross-entropy; returns it and its history.

    ``hp``: ``depth``, ``base``, ``lr``, ``epochs``, ``batch_size``. The history
    has per-epoch ``train_loss`` (and ``test_loss`` when ``test`` is given) and
    the wall ``seconds``.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(hp, n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=float(hp.get("lr", 3e-3)))
    x, y = _tensors(images, masks)
    bs = int(hp.get("batch_size", 8))
    freq = np.bincount(np.asarray(masks).ravel(), minlength=n_classes) + 1.0
    weight = torch.tensor((freq.sum() / freq) ** 0.5, dtype=torch.float32)
    weight = weight / weight.mean()
    history: dict[str, Any] = {"train_loss": [], "test_loss": []}
    started = time.monotonic()
    for _ in range(int(hp.get("epochs", 5))):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(bs):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx], weight=weight)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history["train_loss"].append(total / len(x))
        if test is not None:
            history["test_loss"].append(evaluate(model, *test, n_classes)["loss"])
    history["seconds"] = time.monotonic() - started
    return model, history


def save_model(model: UNet, hp: Mapping[str, Any], n_classes: int) -> bytes:
    """The model's weights and architecture as bytes (``torch.save`` format)."""
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "hp": dict(hp), "n_classes": n_classes}, buf)
    return buf.getvalue()


def load_model(data: bytes | str) -> tuple[UNet, dict[str, Any]]:
    """A model from :func:`save_model` bytes or a ``.pt`` path; returns (model, hp)."""
    src: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    blob = torch.load(src, map_location="cpu", weights_only=True)
    model = build(blob["hp"], int(blob["n_classes"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, dict(blob["hp"])
