"""Step 4, reconstruct (the command run per slice), and the montage and RMSE report.

Each command reconstructs its slice and records its RMSE against the phantom. The command that
finds every slice reconstructed then writes the montage and the report; when several find it
at once they write the same bytes, atomically, so no coordination is needed.
"""

from __future__ import annotations

import numpy as np

from tomo import phantom, png
from tomo.data import Scan, load_array, load_json, save_array, save_json, slice_key, store
from tomo.fbp import backprojector

WINDOW = (0.0, 1.6)  # display range: soft-tissue contrast visible, the skull saturates
MONTAGE_ROWS = 4


def field_of_view(n: int) -> np.ndarray:
    """Pixels inside the circle every projection covers: only there is FBP defined."""
    c = np.arange(n) - (n - 1) / 2
    x, y = np.meshgrid(c, c)
    inside: np.ndarray = (x**2 + y**2) <= ((n - 1) / 2) ** 2
    return inside


def rmse(recon: np.ndarray, truth: np.ndarray) -> float:
    mask = field_of_view(recon.shape[0])
    return float(np.sqrt(np.mean((recon[mask] - truth[mask]) ** 2)))


def reconstruct(index: int, device: str | None = None) -> float:
    scan = Scan.recorded()
    offset = float(load_json("calibration.json")["centre_offset_px"])
    project, backend = backprojector(device)
    recon = project(load_array(slice_key("filtered", index)), scan.theta(), offset, scan.size)
    save_array(slice_key("recon", index), recon)
    error = rmse(recon, phantom.image(phantom.slice_z(index, scan.slices), scan.size))
    save_json(f"recon/{index:04d}.json", {"rmse": round(error, 5), "backend": backend})
    print(f"slice {index}: RMSE {error:.4f} ({backend})")
    if sum(key.endswith(".json") for key in store().list("recon")) == scan.slices:
        write_report(scan)
    return error


def write_report(scan: Scan) -> dict[str, object]:
    """montage.png (phantom | reconstruction for a few slices) and report.json."""
    per_slice = [load_json(f"recon/{i:04d}.json") for i in range(scan.slices)]
    shown = sorted({round(float(i)) for i in np.linspace(0, scan.slices - 1, min(MONTAGE_ROWS, scan.slices))})
    gap = 4
    rows = []
    for i in shown:
        truth = phantom.image(phantom.slice_z(i, scan.slices), scan.size)
        recon = load_array(slice_key("recon", i))
        rows.append(np.hstack([truth, np.full((scan.size, gap), WINDOW[1]), recon]))
        rows.append(np.full((gap, rows[-1].shape[1]), WINDOW[1]))
    store().write("montage.png", png.encode(np.vstack(rows[:-1]), *WINDOW))
    errors = [p["rmse"] for p in per_slice]
    report = {
        "rmse_mean": round(float(np.mean(errors)), 5),
        "rmse_max": round(float(np.max(errors)), 5),
        "slices": scan.slices,
        "size": scan.size,
        "angles": scan.angles,
        "montage_slices": shown,
        "backend": per_slice[-1]["backend"],
        "centre_offset_px": load_json("calibration.json")["centre_offset_px"],
    }
    save_json("report.json", report)
    return report
