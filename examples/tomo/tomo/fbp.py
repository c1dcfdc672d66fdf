"""Step 4, reconstruct: filtered back-projection of a slice with the calibrated centre.

Every output pixel (x, y) sums, over the angles θ, the filtered projection at detector position
x·cos θ + y·sin θ + centre, linearly interpolated. numpy does it per angle when there is no
usable OpenCL device; OpenCL has one kernel per kind of device:

- GPUs: one work item per pixel, neighbours reading neighbouring detector bins (coalesced).
- CPUs: one work item per run of ROW_PIXELS pixels of a row, so the compiler turns the pixels
  into SIMD lanes. The sinogram goes in as a table of (value, slope to the next bin) with a
  zero entry at each end, so an out-of-range position is clamped onto a zero instead of
  branching, and each update is one 8-byte load. PoCL 3.0 calls `floor`, `clamp` and `fma` out
  of line, which stops vectorisation, so the CPU kernel does without them. 4.5x faster than the
  GPU kernel on PoCL, 1.8x on Intel's CPU runtime (bench/README.md).

Pixel (col, row) sits at x = col - origin, y = origin - row from the rotation axis. The default
origin, (n - 1) / 2, puts the axis between the two middle pixels of an even-sized image, as the
detector does; scikit-image's `iradon` puts it on pixel n // 2, and `origin` lets a comparison
sample the phantom at the same points as iradon does.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

ROW_PIXELS = 64  # per CPU work item: 32 is 15 % slower at 512² on PoCL, 16 is 36 % (bench/README.md)

KERNELS = """
__kernel void backproject_pixel(__global const float *sino, __global const float *cos_t,
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

/* table: per angle, n_det + 1 entries (p[k], p[k + 1] - p[k]) for k = -1 .. n_det - 1, the
   first and last (0, 0). trig: (cos, sin) per angle. */
__kernel void backproject_row(__global const float2 *table, __global const float2 *trig,
                              const int n_angles, const int n_det, const int n,
                              const float centre, const float origin, const float scale,
                              __global float *out) {
    const int col0 = get_global_id(0) * ROW_PIXELS;
    const int row = get_global_id(1);
    const float x = col0 - origin;
    const float y = origin - row;
    const int last = n_det - 1;
    float acc[ROW_PIXELS];
    for (int i = 0; i < ROW_PIXELS; i++) acc[i] = 0.0f;
    const __global float2 *p = table + 1;  /* p[-1] is the leading zero */
    for (int a = 0; a < n_angles; a++, p += n_det + 1) {
        const float2 t = trig[a];
        const float ky = y * t.y + centre;
        #pragma unroll
        for (int i = 0; i < ROW_PIXELS; i++) {
            const float k = (x + i) * t.x + ky;
            int k0 = (int)k;
            k0 -= k < (float)k0;  /* floor: (int) truncates towards zero */
            const float w = k - (float)k0;
            k0 = k0 < -1 ? -1 : (k0 > last ? last : k0);
            const float2 s = p[k0];
            acc[i] += s.x + w * s.y;
        }
    }
    for (int i = 0; i < ROW_PIXELS && col0 + i < n; i++) out[row * n + col0 + i] = acc[i] * scale;
}
"""


def slope_table(filtered: np.ndarray) -> np.ndarray:
    """The CPU kernel's input: (value, slope) per bin, zero where the interpolation leaves the
    detector (k < 0 or k + 1 >= n_det), as the GPU kernel's bounds test does."""
    n_angles, n_det = filtered.shape
    table = np.zeros((n_angles, n_det + 1, 2), dtype=np.float32)
    table[:, 1:n_det, 0] = filtered[:, :-1]
    table[:, 1:n_det, 1] = np.diff(filtered, axis=1)
    return table


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
    """The kernels built once for a device; `None` from `create` when OpenCL is not usable.

    `per_pixel` picks the GPU kernel (one work item per pixel); by default GPUs get it and
    every other device the CPU kernel. The test runs both on PoCL.
    """

    def __init__(self, cl: Any, device: Any, per_pixel: bool | None = None) -> None:
        self.cl = cl
        self.device = device
        self.per_pixel = bool(device.type & cl.device_type.GPU) if per_pixel is None else per_pixel
        self.context = cl.Context([device])
        self.queue = cl.CommandQueue(self.context)
        program = cl.Program(self.context, KERNELS).build(options=[f"-DROW_PIXELS={ROW_PIXELS}"])
        # One kernel object for the process: fetching it from the program by name makes a new one
        # on every call.
        self.kernel = cl.Kernel(program, "backproject_pixel" if self.per_pixel else "backproject_row")

    @classmethod
    def create(
        cls, device_hint: str | None = None, per_pixel: bool | None = None
    ) -> tuple[OpenCLBackprojector | None, str]:
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
                return cls(cl, device, per_pixel), f"{device.name.strip()} ({device.platform.name.strip()})"
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

        def upload(array: np.ndarray) -> Any:
            flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
            return cl.Buffer(self.context, flags, hostbuf=np.ascontiguousarray(array, dtype=np.float32))

        if self.per_pixel:
            inputs = [upload(filtered), upload(np.cos(theta)), upload(np.sin(theta))]
            work = (n, n)
        else:
            inputs = [upload(slope_table(filtered)), upload(np.stack([np.cos(theta), np.sin(theta)], axis=1))]
            work = (-(-n // ROW_PIXELS), n)
        out = np.empty((n, n), dtype=np.float32)
        out_buf = cl.Buffer(self.context, cl.mem_flags.WRITE_ONLY, out.nbytes)
        self.kernel(
            self.queue,
            work,
            None,
            *inputs,
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
