"""ASTRA Toolbox as the peer of tomo's back-projection, on tomo's own geometry.

ASTRA's parallel geometry differs from tomo's in three ways: its detector is centred on
(n_det - 1) / 2, its volume's origin is the middle of the image, and its image rows run from
y = max_y down. A `parallel_vec` geometry places the detector and each ray exactly where tomo's
sinogram has them (detector coordinate x·cos θ + y·sin θ + centre), and the volume window puts
pixel (col, row) at (col - origin, origin - row); then both sample the same points and their
RMSEs against the phantom compare the methods, nothing else. ASTRA's back-projection is scaled
by dθ = π / angles to match the integral tomo computes.

`bench/` only: astra-toolbox (and the CUDA 12 runtime and cuFFT wheels it requires) is the
`bench` extra, never the runtime.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def timed(repeat: int, run: Callable[[], np.ndarray], budget_s: float = 20.0) -> tuple[float, np.ndarray]:
    """Median seconds of up to `repeat` runs, and the last result.

    Repeats stop once `budget_s` is spent: iradon at 2048² takes a minute a run, and its spread
    over a minute is small beside the ratios measured.
    """
    times: list[float] = []
    result = None
    while len(times) < repeat and sum(times) < budget_s:
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    assert result is not None
    return statistics.median(times), result


def load() -> tuple[Any, str]:
    """The astra module, or None and why it is not usable."""
    try:
        import astra
    except Exception as e:  # ImportError, or a CUDA library missing beside the wheel
        return None, f"astra-toolbox does not import here ({' '.join(str(e).split())[:160]})"
    return astra, f"astra-toolbox {astra.__version__}"


def backprojector(
    astra: Any, filtered: np.ndarray, theta: np.ndarray, offset: float, n: int, origin: float, algorithm: str
) -> tuple[Callable[[], np.ndarray], Callable[[], None]]:
    """A call that back-projects `filtered` with ASTRA's `algorithm` (BP on the CPU with the
    linear projector, BP_CUDA or FBP_CUDA on a GPU), and a call that frees what it made.

    The data is handed to ASTRA before the first call, so a call times the algorithm alone.
    """
    n_det = filtered.shape[1]
    u = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # one detector pixel, along the detector
    ray = np.stack([np.sin(theta), -np.cos(theta)], axis=1)
    # ASTRA's pixel i lies at d + (i - (n_det - 1) / 2) u; tomo's bin k at (k - centre) u.
    detector = -offset * u
    proj = astra.create_proj_geom("parallel_vec", n_det, np.hstack([ray, detector, u]))
    vol = astra.create_vol_geom(n, n, -origin - 0.5, n - origin - 0.5, origin + 0.5 - n, origin + 0.5)
    sino_id = astra.data2d.create("-sino", proj, np.ascontiguousarray(filtered, dtype=np.float32))
    rec_id = astra.data2d.create("-vol", vol, 0)
    config = astra.astra_dict(algorithm)
    config["ProjectionDataId"], config["ReconstructionDataId"] = sino_id, rec_id
    projector = None
    if not algorithm.endswith("_CUDA"):
        projector = astra.create_projector("linear", proj, vol)
        config["ProjectorId"] = projector
    if algorithm.startswith("FBP"):
        config["option"] = {"FilterType": "ram-lak"}
    algorithm_id = astra.algorithm.create(config)
    # FBP scales its result itself; a bare back-projection sums over angles without dθ.
    scale = 1.0 if algorithm.startswith("FBP") else float(np.pi / len(theta))

    def run() -> np.ndarray:
        astra.data2d.store(rec_id, 0)
        astra.algorithm.run(algorithm_id)
        image: np.ndarray = astra.data2d.get(rec_id) * scale
        return image

    def free() -> None:
        astra.algorithm.delete(algorithm_id)
        astra.data2d.delete([sino_id, rec_id])
        if projector is not None:
            astra.projector.delete(projector)

    return run, free
