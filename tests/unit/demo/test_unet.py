"""The U-Net: shapes, save/load, and that a short training beats the trivial model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the demo extra)")

import mscope_sim  # noqa: E402
import unet  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_forward_shape_for_each_depth() -> None:
    x = torch.zeros(2, 1, 16, 16)
    for depth in (1, 2, 3):
        assert unet.UNet(n_classes=3, depth=depth, base=4)(x).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError):
        unet.UNet(depth=0)


def test_mean_iou_and_baseline() -> None:
    truth = np.array([[0, 0, 1, 2]])
    assert unet.mean_iou(truth, truth, 3) == 1.0
    assert unet.baseline_iou(truth, 3) == pytest.approx(0.5 / 3)


def test_two_epochs_beat_the_all_background_baseline() -> None:
    images, masks, _ = mscope_sim.simulate(24, 32, seed=11)
    val_x, val_y, _ = mscope_sim.simulate(8, 32, seed=12)
    hp = {"depth": 1, "base": 8, "lr": 0.01, "epochs": 2, "batch_size": 4}
    model, history = unet.fit(hp, images, masks, 3, seed=0, test=(val_x, val_y))
    assert len(history["train_loss"]) == 2 and len(history["test_loss"]) == 2
    assert history["train_loss"][1] < history["train_loss"][0]
    scores = unet.evaluate(model, val_x, val_y, 3)
    baseline = unet.baseline_iou(val_y, 3)
    assert scores["iou"] > baseline + 0.1, (scores, baseline)
    assert 0 <= scores["mse"] < 1


def test_save_and_load_round_trip() -> None:
    hp = {"depth": 2, "base": 4}
    model = unet.build(hp, 3)
    blob = unet.save_model(model, hp, 3)
    loaded, hp2 = unet.load_model(blob)
    x = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    assert hp2 == hp
    assert np.allclose(unet.predict_proba(model, x), unet.predict_proba(loaded, x), atol=1e-6)
