"""The simulated microscope: shapes, classes, defects, determinism, files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mscope_sim
import numpy as np
import pytest

from tests.unit.demo.conftest import ASSETS


def test_shapes_dtypes_and_classes() -> None:
    images, masks, meta = mscope_sim.simulate(6, 40, seed=3)
    assert images.shape == (6, 40, 40) and images.dtype == np.float32
    assert masks.shape == (6, 40, 40) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1, 2}
    assert meta["classes"] == ["background", "A", "B"]
    fractions = meta["class_fractions"]
    assert fractions[0] > 0.5 and fractions[1] > fractions[2] > 0
    assert len(meta["samples"]) == 6
    assert all(s["vacancies"] >= 0 and s["atoms"] > 10 for s in meta["samples"])
    assert sum(s["substitutions"] for s in meta["samples"]) > 0
    assert -0.5 < images.min() and images.max() < 2.0


def test_atoms_are_brighter_than_background_and_b_brighter_than_a() -> None:
    images, masks, _ = mscope_sim.simulate(8, 48, seed=5)
    bg, a, b = (float(images[masks == c].mean()) for c in range(3))
    assert bg < a < b


def test_deterministic_in_seed() -> None:
    one = mscope_sim.simulate(3, 32, seed=7)
    two = mscope_sim.simulate(3, 32, seed=7)
    other = mscope_sim.simulate(3, 32, seed=8)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    assert not np.array_equal(one[1], other[1])


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        mscope_sim.simulate(0, 32, seed=1)
    with pytest.raises(ValueError):
        mscope_sim.simulate(2, 4, seed=1)


def test_calibration_file_is_the_default_instrument() -> None:
    cal = mscope_sim.load_calibration(ASSETS / "calibration.json")
    assert cal == mscope_sim.DEFAULT_CALIBRATION


def test_shell_wrapper_writes_into_output_dir(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "ZMESH_OUTPUT_DIR": str(tmp_path / "images")}
    env.pop("ZMESH_AGENT_DIR", None)
    proc = subprocess.run(
        ["sh", str(ASSETS / "mscope_sim.sh"), "--n", "4", "--size", "32", "--seed", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    images, masks, meta = mscope_sim.load(tmp_path / "images")
    assert images.shape == (4, 32, 32) and masks.shape == (4, 32, 32)
    assert meta["seed"] == 2 and meta["calibration"]["instrument"]
    assert np.array_equal(images, mscope_sim.simulate(4, 32, 2, meta["calibration"])[0])
    assert "acquired 4 images" in proc.stdout
    json.dumps(meta)
