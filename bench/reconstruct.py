"""Filtered back-projection: examples/tomo's OpenCL kernel (and its numpy fallback) against
scikit-image's `iradon` and ASTRA Toolbox's back-projectors, on the same filtered sinogram,
timed in the same run.

For each size n: an n x n slice of the Shepp-Logan phantom, n angles, Poisson noise (20,000
photons), the pipeline's own flat/dark correction and ramp filter. `iradon` gets the filtered
sinogram with `filter_name=None`, so every method only back-projects. iradon puts the rotation
axis on pixel n // 2 rather than between the two middle pixels; tomo and ASTRA are given the
same origin (bench/_astra.py places ASTRA's detector and volume there), so all sample the
phantom at the same points and their RMSEs compare the methods, not where the phantom's sharp
edges fall on two different grids.

OpenCL times exclude building the kernels (once per process) and include the transfers and
tomo's slope table; ASTRA's exclude handing it the data. The OpenCL device is the first that
builds the kernels, GPUs first; `--device` picks one by a part of its name or its platform's.
ASTRA runs `BP` (the CPU, linear projector) and, where it finds a CUDA GPU, `BP_CUDA` on the
filtered sinogram and `FBP_CUDA` (its own ram-lak filter) on the unfiltered one.
The numpy fallback is timed at sizes up to 1024 only (a minute a run at 2048).

Every RESULT line is printed whatever is missing: a method that cannot run here gives a 0 and
the reason, never a dropped line.

Usage: python bench/reconstruct.py [--sizes 512 2048] [--repeat 3] [--device NAME]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.transform import iradon
from tomo import filters, phantom
from tomo.fbp import OpenCLBackprojector, backproject_numpy
from tomo.reconstruct import rmse
from tomo.scan import detector, record

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _astra

TARGET_VS_IRADON = 5.0
TARGET_VS_ASTRA = 2.0
OFFSET = 0.5  # puts the rotation axis on pixel n/2, where iradon assumes it
NUMPY_UP_TO = 1024


def scan(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Angles, corrected sinogram, filtered sinogram and the phantom on iradon's grid."""
    theta = np.arange(n) * np.pi / n
    gain, dark_current = detector(n, seed=7)
    rng = np.random.default_rng(8)
    beam = 20_000 * gain
    raw = record(beam * np.exp(-phantom.sinogram(0.0, theta, n, OFFSET)), dark_current, rng)
    flat, dark = record(beam, dark_current, rng, 10), record(np.zeros(n), dark_current, rng, 10)
    sinogram = (-np.log(np.clip((raw - dark) / (flat - dark), 1e-6, None))).astype(np.float32)
    origin = n // 2  # iradon's grid; phantom.image's default grid has its origin at (n - 1) / 2
    truth = phantom.image(0.0, n, shift=((n - 1) / 2 - origin, origin - (n - 1) / 2))
    return theta, sinogram, filters.filter_sinogram(sinogram), truth


def compare(n: int, repeat: int, opencl: OpenCLBackprojector | None, detail: str) -> None:
    theta, sinogram, filtered, truth = scan(n)
    origin = n // 2
    rows: dict[str, tuple[float, float]] = {}  # method: (seconds, RMSE)
    misses: dict[str, str] = {}

    def measure(name: str, run: Callable[[], np.ndarray]) -> None:
        seconds, image = _astra.timed(repeat, run)
        rows[name] = (seconds, rmse(image, truth))

    # iradon's back-projection is scaled by pi / (2 * angles), half of the integral's d(theta).
    measure(
        "iradon",
        lambda: (
            2.0 * iradon(filtered.T, theta=np.degrees(theta), filter_name=None, output_size=n, circle=True)
        ),
    )
    if n <= NUMPY_UP_TO:
        measure("numpy", lambda: backproject_numpy(filtered, theta, OFFSET, n, origin))
    if opencl is None:
        misses["opencl"] = detail
    else:
        opencl(filtered, theta, OFFSET, n, origin)  # warm-up: buffers, first launch
        measure("opencl", lambda: opencl(filtered, theta, OFFSET, n, origin))

    astra, astra_detail = _astra.load()
    algorithms = {"astra_cpu": ("BP", filtered)}
    if astra is not None and astra.use_cuda():
        algorithms |= {"astra_bp_cuda": ("BP_CUDA", filtered), "astra_fbp_cuda": ("FBP_CUDA", sinogram)}
    elif astra is not None:
        misses["astra_bp_cuda"] = "astra-toolbox finds no CUDA GPU here"
    for name, (algorithm, data) in algorithms.items():
        if astra is None:
            misses[name] = astra_detail
            continue
        run, free = _astra.backprojector(astra, data, theta, OFFSET, n, origin, algorithm)
        run()  # warm-up
        measure(name, run)
        free()

    labels = {
        "iradon": "scikit-image iradon",
        "numpy": "numpy (tomo's fallback)",
        "opencl": f"OpenCL (tomo's kernel, {detail})",
        "astra_cpu": f"ASTRA BP, CPU ({astra_detail})",
        "astra_bp_cuda": "ASTRA BP_CUDA",
        "astra_fbp_cuda": "ASTRA FBP_CUDA (filters too)",
    }
    sk_time = rows["iradon"][0]
    print(f"== {n} x {n}, {n} angles, median of up to {repeat}")
    print(f"{'back-projection':<56}{'seconds':>10}{'x iradon':>10}{'RMSE':>10}")
    for name, (seconds, error) in rows.items():
        print(f"{labels[name][:55]:<56}{seconds:>10.3f}{sk_time / seconds:>10.2f}{error:>10.5f}")
    for name, reason in misses.items():
        print(f"{labels[name].split(' (')[0]}: not run here: {reason}")

    def result(name: str, value: float | None, unit: str, target: str, reason: str = "") -> None:
        if value is None:
            print(f"RESULT {name}_{n} 0 {unit} target {target} (not measured: {reason})")
        else:
            print(f"RESULT {name}_{n} {value:.{5 if unit == 'difference' else 2}f} {unit} target {target}")

    if "numpy" in rows:
        result("fbp_numpy_speedup_vs_iradon", sk_time / rows["numpy"][0], "ratio", ">= 1.0")
    cl, peer = rows.get("opencl"), rows.get("astra_cpu")
    why = misses.get("opencl", "")
    if cl is None:
        result("fbp_opencl_speedup_vs_iradon", None, "ratio", f">= {TARGET_VS_IRADON}", why)
        result("fbp_opencl_rmse_minus_iradon", None, "difference", "<= 0", why)
    else:
        result("fbp_opencl_speedup_vs_iradon", sk_time / cl[0], "ratio", f">= {TARGET_VS_IRADON}")
        result("fbp_opencl_rmse_minus_iradon", cl[1] - rows["iradon"][1], "difference", "<= 0")
    if cl is None or peer is None:
        why = why or misses.get("astra_cpu", "")
        result("fbp_opencl_speedup_vs_astra_cpu", None, "ratio", f">= {TARGET_VS_ASTRA}", why)
        result("fbp_opencl_rmse_minus_astra_cpu", None, "difference", "<= 0", why)
    else:
        result("fbp_opencl_speedup_vs_astra_cpu", peer[0] / cl[0], "ratio", f">= {TARGET_VS_ASTRA}")
        result("fbp_opencl_rmse_minus_astra_cpu", cl[1] - peer[1], "difference", "<= 0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--device", help="OpenCL device, by part of its name or its platform's (default: GPU first)"
    )
    args = parser.parse_args()
    opencl, detail = OpenCLBackprojector.create(args.device)
    if opencl is None:
        print(f"OpenCL: not usable here: {detail}")
        print("(a processor newer than PoCL's LLVM: `make bench OPENCL_CPU=intel` adds Intel's CPU runtime)")
    for n in args.sizes:
        compare(n, args.repeat, opencl, detail)


if __name__ == "__main__":
    main()
