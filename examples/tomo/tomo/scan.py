"""Step 1, acquire: simulate a slice's scan as a detector records it, then correct it.

Raw counts are Poisson noise on I0 · gain · exp(-line integral), plus a dark current; the flat
and dark fields are averages of a few frames. Correction: (raw - dark) / (flat - dark), then
-log, gives the sinogram the later steps use.
"""

from __future__ import annotations

import os

import numpy as np

from tomo import phantom
from tomo.data import Scan, save_array, save_json, slice_key

FLAT_FRAMES = 10
DARK_LEVEL = 100.0


def detector(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel gain and dark current: properties of the detector, the same for every slice."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, size)
    gain = (1.0 + 0.08 * np.sin(2 * np.pi * 1.5 * x)) * rng.normal(1.0, 0.02, size)
    dark = DARK_LEVEL + rng.normal(0.0, 3.0, size)
    return gain, dark


def record(expected: np.ndarray, dark: np.ndarray, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """Mean of `frames` noisy frames: photon (Poisson) noise on the signal, plus the dark current."""
    counts = rng.poisson(np.broadcast_to(expected, (frames, *expected.shape))).mean(axis=0)
    recorded: np.ndarray = counts + dark + rng.normal(0.0, 2.0, expected.shape)
    return recorded


def acquire(index: int) -> None:
    scan = Scan.from_environ()
    offset = float(os.environ.get("TOMO_OFFSET", "0"))  # the unknown the calibration recovers
    photons = float(os.environ.get("TOMO_PHOTONS", "20000"))
    seed = int(os.environ.get("TOMO_SEED", "7"))
    gain, dark_current = detector(scan.size, seed)
    rng = np.random.default_rng(seed + 1 + index)

    z = phantom.slice_z(index, scan.slices)
    angles = np.append(scan.theta(), np.pi)  # the last projection (180°) is for calibration
    beam = photons * gain
    raw = record(beam * np.exp(-phantom.sinogram(z, angles, scan.size, offset)), dark_current, rng)
    flat = record(beam, dark_current, rng, FLAT_FRAMES)
    dark = record(np.zeros(scan.size), dark_current, rng, FLAT_FRAMES)

    transmission = np.clip((raw - dark) / (flat - dark), 1e-6, None)
    sino = (-np.log(transmission)).astype(np.float32)
    save_array(slice_key("sinograms", index), sino[:-1])
    save_array(slice_key("at180", index), sino[-1])
    save_json("scan.json", {"slices": scan.slices, "size": scan.size, "angles": scan.angles})
