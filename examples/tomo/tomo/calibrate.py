"""Step 3, calibrate: find the centre of rotation the acquisition did not tell anyone.

For parallel beams the 180° projection is the 0° one mirrored about the rotation axis, so the
mirrored 180° projection is the 0° projection shifted by twice the axis' offset from the
detector centre. The shift is found to the nearest pixel by cross-correlation, then to 0.01
pixel by least squares with linear interpolation; averaging over slices beats the noise down.
"""

from __future__ import annotations

import numpy as np

from tomo.data import Scan, load_array, save_json, slice_key


def shift_between(reference: np.ndarray, moved: np.ndarray) -> float:
    """s such that moved[k] ≈ reference[k + s], to a hundredth of a pixel."""
    n = len(reference)
    a = reference - reference.mean()
    b = moved - moved.mean()
    correlation = np.real(np.fft.ifft(np.fft.fft(b, 2 * n) * np.conj(np.fft.fft(a, 2 * n))))
    lag = int(np.argmax(correlation))
    coarse = -(lag if lag < n else lag - 2 * n)  # circular lag → signed shift of `reference`
    k = np.arange(n, dtype=float)
    best, best_error = float(coarse), np.inf
    for s in np.arange(coarse - 1.0, coarse + 1.0, 0.01):
        positions = k + s
        valid = (positions >= 0) & (positions <= n - 1)
        error = float(np.mean((np.interp(positions[valid], k, reference) - moved[valid]) ** 2))
        if error < best_error:
            best, best_error = float(s), error
    return best


def centre_offset(at0: np.ndarray, at180: np.ndarray) -> float:
    """Offset of the rotation axis from the detector centre, in pixels."""
    return shift_between(at0, at180[::-1]) / 2.0


def calibrate() -> float:
    scan = Scan.recorded()
    offsets = [
        centre_offset(load_array(slice_key("sinograms", i))[0], load_array(slice_key("at180", i)))
        for i in range(scan.slices)
    ]
    offset = float(np.median(offsets))
    save_json(
        "calibration.json",
        {"centre_offset_px": round(offset, 3), "per_slice": [round(o, 3) for o in offsets]},
    )
    print(f"centre of rotation: {offset:+.3f} px from the detector centre ({scan.slices} slices)")
    return offset
