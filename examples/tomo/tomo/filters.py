"""Step 2, filter: the ramp filter of filtered back-projection, in the Fourier domain.

Each projection is zero-padded to a power of two at least twice its length (so the filter's
circular convolution does not wrap around) and multiplied by |ω|, windowed to tame the noise
the ramp amplifies at high frequencies.
"""

from __future__ import annotations

import numpy as np

from tomo.data import Scan, load_array, save_array, slice_key

WINDOWS = ("ram-lak", "shepp-logan", "hann")


def ramp(n: int, spacing: float, window: str) -> np.ndarray:
    """Frequency response |ω|·window(ω) for an n-sample FFT, ω in cycles per unit length."""
    freq = np.fft.fftfreq(n, d=spacing)
    response: np.ndarray = np.abs(freq)
    nyquist = 0.5 / spacing
    if window == "shepp-logan":
        response = response * np.sinc(freq / (2 * nyquist))
    elif window == "hann":
        response = response * 0.5 * (1 + np.cos(np.pi * freq / nyquist))
    elif window != "ram-lak":
        raise ValueError(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    return response


def filter_sinogram(sino: np.ndarray, window: str = "shepp-logan") -> np.ndarray:
    """Ramp-filter every row of a (angles, detector) sinogram; the detector spans [-1, 1]."""
    n_det = sino.shape[1]
    padded = 1 << int(np.ceil(np.log2(2 * n_det)))
    spectrum = np.fft.fft(sino, n=padded, axis=1) * ramp(padded, 2.0 / n_det, window)
    return np.real(np.fft.ifft(spectrum, axis=1))[:, :n_det].astype(np.float32)


def filter_slice(index: int, window: str) -> None:
    Scan.recorded()  # the acquisition must have happened
    save_array(
        slice_key("filtered", index), filter_sinogram(load_array(slice_key("sinograms", index)), window)
    )
