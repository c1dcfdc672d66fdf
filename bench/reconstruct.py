"""Filtered back-projection: examples/tomo's OpenCL kernel (and its numpy fallback) against
scikit-image's `iradon`, on the same filtered sinogram, timed in the same run.

A 512 x 512 slice of the Shepp-Logan phantom, 512 angles, Poisson noise (20,000 photons), the
pipeline's own flat/dark correction and ramp filter. `iradon` gets the filtered sinogram with
`filter_name=None`, so both sides only back-project. iradon puts the rotation axis on pixel
n // 2 rather than between the two middle pixels; the tomo back-projections are given the same
origin, so all three sample the phantom at the same points and their RMSEs compare the methods,
not where the phantom's sharp edges fall on two different grids. OpenCL times exclude building
the kernel (done once per process) and include the transfers.

The OpenCL device is the first that builds the kernel, GPUs first; `--device` picks one by a
part of its name or its platform's.
`make bench` also registers Intel's OpenCL CPU runtime, which compiles for processors newer than
PoCL's LLVM knows (see bench/README.md).

Usage: python bench/reconstruct.py [--size 512] [--angles 512] [--repeat 3] [--device NAME]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from skimage.transform import iradon
from tomo import filters, phantom
from tomo.fbp import OpenCLBackprojector, backproject_numpy
from tomo.reconstruct import rmse
from tomo.scan import detector, record

TARGET = 5.0
OFFSET = 0.5  # puts the rotation axis on pixel n/2, where iradon assumes it


def best_of(repeat: int, run: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    assert result is not None
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--angles", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--device", help="OpenCL device, by part of its name or its platform's (default: GPU first)"
    )
    args = parser.parse_args()
    n = args.size
    theta = np.arange(args.angles) * np.pi / args.angles

    gain, dark_current = detector(n, seed=7)
    rng = np.random.default_rng(8)
    beam = 20_000 * gain
    raw = record(beam * np.exp(-phantom.sinogram(0.0, theta, n, OFFSET)), dark_current, rng)
    flat, dark = record(beam, dark_current, rng, 10), record(np.zeros(n), dark_current, rng, 10)
    sinogram = (-np.log(np.clip((raw - dark) / (flat - dark), 1e-6, None))).astype(np.float32)
    filtered = filters.filter_sinogram(sinogram)

    origin = n // 2  # iradon's grid; phantom.image's default grid has its origin at (n - 1) / 2
    truth = phantom.image(0.0, n, shift=((n - 1) / 2 - origin, origin - (n - 1) / 2))
    degrees = np.degrees(theta)

    def skimage_run() -> np.ndarray:
        # iradon's back-projection is scaled by pi / (2 * angles), half of the integral's d(theta).
        return 2.0 * iradon(filtered.T, theta=degrees, filter_name=None, output_size=n, circle=True)

    rows = []
    sk_time, sk_image = best_of(args.repeat, skimage_run)
    rows.append(("scikit-image iradon", sk_time, rmse(sk_image, truth)))
    np_time, np_image = best_of(args.repeat, lambda: backproject_numpy(filtered, theta, OFFSET, n, origin))
    rows.append(("numpy (tomo fallback)", np_time, rmse(np_image, truth)))
    opencl, detail = OpenCLBackprojector.create(args.device)
    if opencl is not None:
        opencl(filtered, theta, OFFSET, n, origin)  # warm-up: buffers, first launch
        cl_time, cl_image = best_of(args.repeat, lambda: opencl(filtered, theta, OFFSET, n, origin))
        rows.append((f"OpenCL ({detail})", cl_time, rmse(cl_image, truth)))

    print(f"{n} x {n}, {args.angles} angles, median of {args.repeat}")
    print(f"{'back-projection':<48}{'seconds':>10}{'x iradon':>10}{'RMSE':>10}")
    for name, seconds, error in rows:
        print(f"{name[:47]:<48}{seconds:>10.3f}{sk_time / seconds:>10.2f}{error:>10.5f}")
    if opencl is None:
        print(f"OpenCL: not usable here: {detail}")
        print("(a processor newer than PoCL's LLVM: `make bench OPENCL_CPU=intel` adds Intel's CPU runtime)")
    print(f"RESULT fbp_numpy_speedup_vs_iradon {sk_time / np_time:.2f} ratio target >= 1.0")
    if opencl is not None:
        print(f"RESULT fbp_opencl_speedup_vs_iradon {sk_time / cl_time:.2f} ratio target >= {TARGET}")
        print(f"RESULT fbp_opencl_rmse_minus_iradon {rows[-1][2] - rows[0][2]:.5f} difference target <= 0")


if __name__ == "__main__":
    main()
