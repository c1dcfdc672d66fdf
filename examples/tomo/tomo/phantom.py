"""The 3-D Shepp-Logan phantom and its exact parallel-beam projections.

Projections are computed analytically from the ellipses' line integrals, so the simulated
data carries no interpolation error of its own: what the reconstruction loses is its own.
Coordinates are normalised: the object fits in [-1, 1]², a detector or image pixel is 2/n wide.
"""

from __future__ import annotations

import numpy as np

# Modified (higher-contrast) 3-D Shepp-Logan ellipsoids: density, semi-axes a b c, centre x y z,
# rotation about z in degrees.
ELLIPSOIDS = np.array(
    [
        [1.0, 0.6900, 0.920, 0.810, 0.00, 0.000, 0.00, 0.0],
        [-0.8, 0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0.0],
        [-0.2, 0.1100, 0.310, 0.220, 0.22, 0.000, 0.00, -18.0],
        [-0.2, 0.1600, 0.410, 0.280, -0.22, 0.000, 0.00, 18.0],
        [0.1, 0.2100, 0.250, 0.410, 0.00, 0.350, -0.15, 0.0],
        [0.1, 0.0460, 0.046, 0.050, 0.00, 0.100, 0.25, 0.0],
        [0.1, 0.0460, 0.046, 0.050, 0.00, -0.100, 0.25, 0.0],
        [0.1, 0.0460, 0.023, 0.050, -0.08, -0.605, 0.00, 0.0],
        [0.1, 0.0230, 0.023, 0.020, 0.00, -0.606, 0.00, 0.0],
        [0.1, 0.0230, 0.046, 0.020, 0.06, -0.605, 0.00, 0.0],
    ]
)
ATTENUATION = 4.0  # density 1 attenuates e^-4 per unit length: transmissions of 2..60 %


def slice_z(index: int, n_slices: int) -> float:
    """Height of slice `index`: the slices span the phantom's middle, where its detail is."""
    return float(np.linspace(-0.45, 0.45, n_slices)[index]) if n_slices > 1 else 0.0


def ellipses(z: float) -> list[tuple[float, float, float, float, float, float]]:
    """(density, a, b, x0, y0, phi) of the ellipsoids' cross-sections at height z."""
    found = []
    for density, a, b, c, x0, y0, z0, phi in ELLIPSOIDS:
        r = 1.0 - ((z - z0) / c) ** 2
        if r > 0:
            s = float(np.sqrt(r))
            found.append((density * ATTENUATION, a * s, b * s, x0, y0, np.deg2rad(phi)))
    return found


def image(z: float, n: int, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The slice at height z on an nxn grid (row 0 at the top), attenuation per unit length.

    `shift` moves the pixel centres by (dx, dy) pixels: other tools' grids (scikit-image's
    puts the centre on a pixel, not between two) are compared on their own sampling.
    """
    centres = (np.arange(n) - (n - 1) / 2) * (2.0 / n)
    x, y = np.meshgrid(centres + shift[0] * 2.0 / n, -centres + shift[1] * 2.0 / n)
    out = np.zeros((n, n))
    for density, a, b, x0, y0, phi in ellipses(z):
        dx, dy = x - x0, y - y0
        u = dx * np.cos(phi) + dy * np.sin(phi)
        v = -dx * np.sin(phi) + dy * np.cos(phi)
        out[(u / a) ** 2 + (v / b) ** 2 <= 1.0] += density
    return out


def sinogram(z: float, angles: np.ndarray, n_det: int, offset: float) -> np.ndarray:
    """Exact line integrals, shape (angles, n_det), with the rotation axis `offset` pixels off
    the detector centre: detector pixel k sees t = (k - (n_det-1)/2 - offset) · 2/n_det."""
    t = (np.arange(n_det) - (n_det - 1) / 2 - offset) * (2.0 / n_det)
    out = np.zeros((len(angles), n_det))
    for density, a, b, x0, y0, phi in ellipses(z):
        s = t[None, :] - (x0 * np.cos(angles) + y0 * np.sin(angles))[:, None]
        width2 = ((a * np.cos(angles - phi)) ** 2 + (b * np.sin(angles - phi)) ** 2)[:, None]
        inside = np.clip(width2 - s**2, 0.0, None)
        out += 2.0 * density * a * b * np.sqrt(inside) / width2
    return out
