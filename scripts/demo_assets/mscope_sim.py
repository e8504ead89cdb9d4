"""A toy scanning-transmission electron microscope: atom-resolved images with ground truth.

Stands in for the microscope driver of the paper's Workflow 1 (the Edge). Each
image is a crystal lattice (square or hexagonal, random spacing and orientation)
of 2-D Gaussian atom columns, with vacancies, substitutional atoms of a second
species (brighter, wider), slow scan drift (a shear across the frame plus a small
wave distortion), Poisson shot noise and Gaussian read noise. The mask gives each
pixel its class: 0 background, 1 species A, 2 species B.

numpy only. ``python mscope_sim.py --n 64 --size 64 --seed 1 [--out DIR]`` writes
``images.npz`` (``images``: float32 ``[n, size, size]`` in about [0, 1]),
``masks.npz`` (``masks``: uint8 ``[n, size, size]``) and ``meta.json`` into
``--out`` (default ``$ZMESH_OUTPUT_DIR``, else the current directory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Class index of each pixel in a mask.
CLASSES = ("background", "A", "B")

#: Calibration used when no ``calibration.json`` is given.
DEFAULT_CALIBRATION: dict[str, Any] = {
    "instrument": "simulated STEM (HAADF)",
    "pixel_size_nm": 0.05,
    "dose_counts": 120.0,
    "read_noise": 0.04,
    "background": 0.05,
    "mask_radius_sigma": 1.2,
    "species": {
        "A": {"amplitude": 0.55, "sigma": 1.3},
        "B": {"amplitude": 1.0, "sigma": 1.7},
    },
    "spacing_px": [6.0, 8.5],
    "vacancy_rate": 0.08,
    "substitution_rate": 0.15,
    "drift_px": 3.0,
}


def load_calibration(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The defaults updated with the keys of the JSON file at ``path`` (if any)."""
    cal = json.loads(json.dumps(DEFAULT_CALIBRATION))
    if path:
        with open(path) as f:
            cal.update(json.load(f))
    return cal


def _lattice(rng: np.random.Generator, size: int, spacing: float, hexagonal: bool) -> np.ndarray:
    """Atom positions (x, y) covering a ``size`` frame, rotated by a random angle."""
    a1 = np.array([spacing, 0.0])
    a2 = (
        np.array([spacing / 2, spacing * math.sqrt(3) / 2]) if hexagonal else np.array([0, spacing])
    )
    reach = int(size * 1.5 / spacing) + 2
    i, j = np.meshgrid(np.arange(-reach, reach), np.arange(-reach, reach), indexing="ij")
    pts = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    theta = rng.uniform(0, math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    pts = pts @ rot.T + size / 2 + rng.uniform(-spacing / 2, spacing / 2, size=2)
    return np.asarray(pts)


def _drift(rng: np.random.Generator, pts: np.ndarray, size: int, drift_px: float) -> np.ndarray:
    """Scan drift: positions sheared along the slow scan axis plus a gentle wave."""
    vx, vy = rng.normal(0, drift_px, size=2)
    frac = pts[:, 1] / size  # slow-scan position (rows are acquired in time order)
    amp, phase = rng.uniform(0, 0.6), rng.uniform(0, 2 * math.pi)
    out = pts.copy()
    out[:, 0] += vx * frac + amp * np.sin(2 * math.pi * frac + phase)
    out[:, 1] += vy * frac
    return out


def render(
    rng: np.random.Generator, size: int, cal: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One noisy image, its class mask and a description of the sample."""
    lo, hi = cal["spacing_px"]
    spacing = float(rng.uniform(lo, hi))
    hexagonal = bool(rng.random() < 0.5)
    pts = _drift(rng, _lattice(rng, size, spacing, hexagonal), size, float(cal["drift_px"]))
    keep = (pts[:, 0] > -4) & (pts[:, 0] < size + 4) & (pts[:, 1] > -4) & (pts[:, 1] < size + 4)
    pts = pts[keep]
    u = rng.random(len(pts))
    vacancy = u < cal["vacancy_rate"]
    species_b = (~vacancy) & (u < cal["vacancy_rate"] + cal["substitution_rate"])
    clean = np.full((size, size), float(cal["background"]))
    mask = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    r_mask = float(cal["mask_radius_sigma"])
    for (x, y), vac, is_b in zip(pts, vacancy, species_b, strict=True):
        if vac:
            continue
        sp = cal["species"]["B" if is_b else "A"]
        sigma = float(sp["sigma"]) * rng.uniform(0.9, 1.1)
        amp = float(sp["amplitude"]) * rng.uniform(0.9, 1.1)
        w = math.ceil(4 * sigma)
        x0, x1 = max(int(x) - w, 0), min(int(x) + w + 1, size)
        y0, y1 = max(int(y) - w, 0), min(int(y) + w + 1, size)
        if x0 >= x1 or y0 >= y1:
            continue
        d2 = (xx[y0:y1, x0:x1] - x) ** 2 + (yy[y0:y1, x0:x1] - y) ** 2
        clean[y0:y1, x0:x1] += amp * np.exp(-d2 / (2 * sigma**2))
        core = d2 <= (r_mask * float(sp["sigma"])) ** 2
        mask[y0:y1, x0:x1][core] = 2 if is_b else 1
    dose = float(cal["dose_counts"])
    noisy = rng.poisson(np.clip(clean, 0, None) * dose) / dose
    noisy = noisy + rng.normal(0, float(cal["read_noise"]), size=noisy.shape)
    info = {
        "lattice": "hexagonal" if hexagonal else "square",
        "spacing_px": round(spacing, 3),
        "atoms": int((~vacancy).sum()),
        "vacancies": int(vacancy.sum()),
        "substitutions": int(species_b.sum()),
    }
    return (noisy / 1.2).astype(np.float32), mask, info


def simulate(
    n: int, size: int, seed: int, calibration: Mapping[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``n`` images of ``size``² pixels: (images, masks, meta); deterministic in ``seed``."""
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n} size={size}")
    cal = dict(calibration) if calibration is not None else load_calibration(None)
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.uint8)
    samples = []
    for k in range(n):
        images[k], masks[k], info = render(rng, size, cal)
        samples.append(info)
    fractions = [float((masks == c).mean()) for c in range(len(CLASSES))]
    meta = {
        "n": n,
        "size": size,
        "seed": seed,
        "classes": list(CLASSES),
        "class_fractions": [round(f, 4) for f in fractions],
        "calibration": cal,
        "samples": samples,
    }
    return images, masks, meta


def write(out: Path, images: np.ndarray, masks: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write ``images.npz``, ``masks.npz`` and ``meta.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "images.npz", images=images)
    np.savez_compressed(out / "masks.npz", masks=masks)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def load(directory: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read back what :func:`write` wrote."""
    d = Path(directory)
    with np.load(d / "images.npz") as f:
        images = f["images"]
    with np.load(d / "masks.npz") as f:
        masks = f["masks"]
    return images, masks, json.loads((d / "meta.json").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: simulate and write a data set."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a small set (32 images of 48x48)")
    p.add_argument("--calibration", help="calibration.json of the instrument")
    p.add_argument("--out", help="output dir (default $ZMESH_OUTPUT_DIR or .)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.size = min(args.n, 32), min(args.size, 48)
    out = Path(args.out or os.environ.get("ZMESH_OUTPUT_DIR") or ".")
    started = time.monotonic()
    images, masks, meta = simulate(args.n, args.size, args.seed, load_calibration(args.calibration))
    write(out, images, masks, meta)
    print(
        f"acquired {args.n} images of {args.size}x{args.size} px (seed {args.seed}) "
        f"in {time.monotonic() - started:.2f} s; class fractions {meta['class_fractions']} "
        f"-> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
