"""Step 4, reconstruct: filtered back-projection of a slice with the calibrated centre.

Every output pixel (x, y) sums, over the angles θ, the filtered projection at detector position
x·cos θ + y·sin θ + centre, linearly interpolated. On OpenCL one work item computes one pixel
with the angles' cosines and sines precomputed; numpy does the same per angle when there is no
usable OpenCL device.

Pixel (col, row) sits at x = col - origin, y = origin - row from the rotation axis. The default
origin, (n - 1) / 2, puts the axis between the two middle pixels of an even-sized image, as the
detector does; scikit-image's `iradon` puts it on pixel n // 2, and `origin` lets a comparison
sample the phantom at the same points as iradon does.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

KERNEL = """
__kernel void backproject(__global const float *sino, __global const float *cos_t,
                          __global const float *sin_t, const int n_angles, const int n_det,
                          const int n, const float centre, const float origin,
                          const float scale, __global float *out) {
    const int col = get_global_id(0);
    const int row = get_global_id(1);
    if (col >= n || row >= n) return;
    const float x = col - origin;
    const float y = origin - row;
    float acc = 0.0f;
    for (int a = 0; a < n_angles; a++) {
        const float k = x * cos_t[a] + y * sin_t[a] + centre;
        const int k0 = (int)floor(k);
        if (k0 >= 0 && k0 + 1 < n_det) {
            const float w = k - k0;
            const __global float *p = sino + a * n_det;
            acc += (1.0f - w) * p[k0] + w * p[k0 + 1];
        }
    }
    out[row * n + col] = acc * scale;
}
"""


def _scale(n_angles: int) -> float:
    return float(np.pi / n_angles)  # dθ of the back-projection integral over [0, π)


def _origin(n: int, origin: float | None) -> float:
    return (n - 1) / 2 if origin is None else origin


def backproject_numpy(
    filtered: np.ndarray, theta: np.ndarray, offset: float, n: int, origin: float | None = None
) -> np.ndarray:
    n_angles, n_det = filtered.shape
    centre = (n_det - 1) / 2 + offset
    coords = np.arange(n) - _origin(n, origin)
    x, y = np.meshgrid(coords, -coords)
    out = np.zeros((n, n))
    index = np.arange(n_det, dtype=float)
    for a in range(n_angles):
        k = x * np.cos(theta[a]) + y * np.sin(theta[a]) + centre
        out += np.interp(k, index, filtered[a], left=0.0, right=0.0)
    return (out * _scale(n_angles)).astype(np.float32)


class OpenCLBackprojector:
    """The kernel built once for a device; `None` from `create` when OpenCL is not usable."""

    def __init__(self, cl: Any, device: Any) -> None:
        self.cl = cl
        self.device = device
        self.context = cl.Context([device])
        self.queue = cl.CommandQueue(self.context)
        # One kernel object for the process: fetching it from the program by name makes a new one
        # on every call.
        self.kernel = cl.Kernel(cl.Program(self.context, KERNEL).build(), "backproject")

    @classmethod
    def create(cls, device_hint: str | None = None) -> tuple[OpenCLBackprojector | None, str]:
        """A back-projector on the best device that builds the kernel, or None and why not.

        GPUs come first. A device whose compiler fails (an OpenCL CPU driver older than the
        processor, say) does not hide the next one: the machine may have two CPU drivers.
        """
        try:
            import pyopencl as cl
        except ImportError as e:
            return None, f"pyopencl is not installed ({e})"
        try:
            devices = [d for p in cl.get_platforms() for d in p.get_devices()]
        except cl.Error as e:
            return None, f"no OpenCL platform ({e})"
        if device_hint:
            hint = device_hint.lower()
            devices = [d for d in devices if hint in f"{d.name} {d.platform.name}".lower()]
        if not devices:
            return None, "no OpenCL device" + (f" matching {device_hint!r}" if device_hint else "")
        failures = []
        for device in sorted(devices, key=lambda d: not d.type & cl.device_type.GPU):
            try:
                return cls(cl, device), f"{device.name.strip()} ({device.platform.name.strip()})"
            except cl.Error as e:
                reason = " ".join(str(e).split())
                if "unknown target CPU" in reason:
                    reason = "the OpenCL compiler cannot target this CPU (see `opsctl-worker gpu-check`)"
                failures.append(f"{device.name.strip()}: {reason[:200]}")
        return None, "; ".join(failures)

    def __call__(
        self, filtered: np.ndarray, theta: np.ndarray, offset: float, n: int, origin: float | None = None
    ) -> np.ndarray:
        cl = self.cl
        n_angles, n_det = filtered.shape
        flags = cl.mem_flags
        host = np.ascontiguousarray(filtered, dtype=np.float32)
        sino = cl.Buffer(self.context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=host)
        cos_t = cl.Buffer(
            self.context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=np.cos(theta).astype(np.float32)
        )
        sin_t = cl.Buffer(
            self.context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=np.sin(theta).astype(np.float32)
        )
        out = np.empty((n, n), dtype=np.float32)
        out_buf = cl.Buffer(self.context, flags.WRITE_ONLY, out.nbytes)
        self.kernel(
            self.queue,
            (n, n),
            None,
            sino,
            cos_t,
            sin_t,
            np.int32(n_angles),
            np.int32(n_det),
            np.int32(n),
            np.float32((n_det - 1) / 2 + offset),
            np.float32(_origin(n, origin)),
            np.float32(_scale(n_angles)),
            out_buf,
        )
        cl.enqueue_copy(self.queue, out, out_buf)
        self.queue.finish()
        return out


def backprojector(device_hint: str | None = None) -> tuple[Any, str]:
    """OpenCL if usable, else numpy; and a one-line description of which and why."""
    if os.environ.get("TOMO_BACKEND") == "numpy":
        return backproject_numpy, "numpy (TOMO_BACKEND=numpy)"
    opencl, detail = OpenCLBackprojector.create(device_hint)
    if opencl is None:
        return backproject_numpy, f"numpy (OpenCL not usable: {detail})"
    return opencl, f"OpenCL on {detail}"
