"""tomo's OpenCL back-projection on a GPU: throughput in giga-updates per second and the share of
the device's memory bandwidth it reaches, against ASTRA's CUDA back-projector where it runs.

For each size n: an n x n Shepp-Logan slice, n angles over [0, pi), its analytic sinogram
filtered by the pipeline's ramp filter. The kernel is timed with OpenCL's event profiling (the
kernel alone, the sinogram already on the device), median of --repeat launches after one
warm-up; one update is one pixel's contribution from one angle (n * n * angles of them). The
bandwidth figure counts the bytes the kernel asks for (two floats of the sinogram per update)
against a device-to-device copy measured in the same run: above 1 means the caches serve most
reads. ASTRA (astra-toolbox) runs `BP_CUDA` on the same filtered sinogram where it imports with
CUDA, else the line says why. RESULT lines are printed whatever happens, as misses with the
reason where the GPU or ASTRA is not usable.

Usage: python bench/gpu_backprojection.py [--sizes 2048 4096] [--device NVIDIA] [--repeat 5]
bench/gpu.sh runs it after the worker's gpu-check.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "tomo"))

from tomo import filters, phantom  # noqa: E402 - after the path is set
from tomo.fbp import OpenCLBackprojector  # noqa: E402
from tomo.reconstruct import rmse  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import _astra  # noqa: E402 - bench/ is not a package


def copy_bandwidth(cl: Any, context: Any, queue: Any, size: int = 1 << 30) -> float:
    """Device-to-device copy, bytes read + written per second, median of 5."""
    src = cl.Buffer(context, cl.mem_flags.READ_WRITE, size)
    dst = cl.Buffer(context, cl.mem_flags.READ_WRITE, size)
    cl.enqueue_copy(queue, dst, src).wait()
    times = []
    for _ in range(5):
        event = cl.enqueue_copy(queue, dst, src)
        event.wait()
        times.append((event.profile.end - event.profile.start) * 1e-9)
    return 2 * size / statistics.median(times)


def opencl_run(
    bp: OpenCLBackprojector, filtered: np.ndarray, theta: np.ndarray, n: int, repeat: int
) -> tuple[float, np.ndarray, float]:
    """Kernel seconds (median), the image, and the copy bandwidth of the device."""
    cl = bp.cl
    queue = cl.CommandQueue(bp.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
    flags = cl.mem_flags
    n_angles, n_det = filtered.shape
    sino = cl.Buffer(
        bp.context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(filtered, np.float32)
    )
    cos_t = cl.Buffer(
        bp.context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=np.cos(theta).astype(np.float32)
    )
    sin_t = cl.Buffer(
        bp.context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=np.sin(theta).astype(np.float32)
    )
    out = np.empty((n, n), np.float32)
    out_buf = cl.Buffer(bp.context, flags.WRITE_ONLY, out.nbytes)
    args = (sino, cos_t, sin_t, np.int32(n_angles), np.int32(n_det), np.int32(n))
    args += (np.float32((n_det - 1) / 2), np.float32((n - 1) / 2), np.float32(np.pi / n_angles), out_buf)
    times = []
    for run in range(repeat + 1):
        event = bp.kernel(queue, (n, n), None, *args)
        event.wait()
        if run:  # the first launch is the warm-up
            times.append((event.profile.end - event.profile.start) * 1e-9)
    cl.enqueue_copy(queue, out, out_buf).wait()
    return statistics.median(times), out, copy_bandwidth(cl, bp.context, queue)


def astra_run(
    filtered: np.ndarray, theta: np.ndarray, n: int, repeat: int
) -> tuple[float | None, np.ndarray | None, str]:
    """ASTRA's BP_CUDA on the same filtered sinogram and grid (bench/_astra.py): seconds, image,
    or why it did not run."""
    astra, detail = _astra.load()
    if astra is None:
        return None, None, detail
    if not astra.use_cuda():
        return None, None, "astra-toolbox has no CUDA device here"
    run, free = _astra.backprojector(astra, filtered, theta, 0.0, n, (n - 1) / 2, "BP_CUDA")
    run()  # warm-up
    seconds, image = _astra.timed(repeat, run)
    free()
    return seconds, image, "BP_CUDA"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument(
        "--device", default="NVIDIA", help="OpenCL device, by part of its or its platform's name"
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bp, detail = OpenCLBackprojector.create(args.device, per_pixel=True)  # the GPU kernel
    print(f"OpenCL: {detail if bp else 'not usable here: ' + detail}")
    for n in args.sizes:
        theta = np.arange(n) * np.pi / n
        filtered = filters.filter_sinogram(phantom.sinogram(0.0, theta, n, 0.0).astype(np.float32))
        truth = phantom.image(0.0, n)
        updates = float(n) * n * n
        print(f"== {n} x {n}, {n} angles: {updates / 1e9:.1f} G updates")
        if bp is None:
            print(f"RESULT gpu_fbp_gups_{n} 0 Gupdates/s target > 0 (not measured: {detail})")
            print(f"RESULT gpu_fbp_bandwidth_share_{n} 0 ratio target > 0 (not measured: {detail})")
        else:
            seconds, image, copy = opencl_run(bp, filtered, theta, n, args.repeat)
            gups = updates / seconds / 1e9
            share = updates * 8 / seconds / copy
            error = rmse(image, truth)
            print(
                f"tomo OpenCL: {seconds * 1000:.1f} ms, {gups:.0f} G updates/s, RMSE {error:.4f}; "
                f"requested bytes at {share:.2f} x the {copy / 1e12:.2f} TB/s device copy"
            )
            print(f"RESULT gpu_fbp_gups_{n} {gups:.1f} Gupdates/s target > 0")
            print(f"RESULT gpu_fbp_bandwidth_share_{n} {share:.2f} ratio target > 0")
        a_seconds, a_image, a_detail = astra_run(filtered, theta, n, args.repeat)
        if a_seconds is None or a_image is None:
            print(f"ASTRA: not run: {a_detail}")
            print(f"RESULT gpu_fbp_vs_astra_cuda_{n} 0 ratio target >= 1.0 (not measured: {a_detail})")
        else:
            print(f"ASTRA {a_detail}: {a_seconds * 1000:.1f} ms, RMSE {rmse(a_image, truth):.4f}")
            if bp is None:
                print(f"RESULT gpu_fbp_vs_astra_cuda_{n} 0 ratio target >= 1.0 (not measured: {detail})")
            else:
                print(f"RESULT gpu_fbp_vs_astra_cuda_{n} {a_seconds / seconds:.2f} ratio target >= 1.0")


if __name__ == "__main__":
    main()
