"""The tomography example: calibration accuracy, OpenCL against numpy, reconstruction quality,
and the whole 4-step pipeline through the local backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tomo import filters, phantom
from tomo.fbp import backproject_numpy
from tomo.reconstruct import rmse

from tests.test_gpucheck import worker_argv

OPSCTL = str(Path(sys.executable).parent / "opsctl")
SIZE = 128


@pytest.fixture
def run_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPSCTL_RUN_URI", str(tmp_path))
    for name, value in {"TOMO_SLICES": "3", "TOMO_SIZE": str(SIZE), "TOMO_ANGLES": str(SIZE)}.items():
        monkeypatch.setenv(name, value)
    return tmp_path


@pytest.mark.parametrize("offset", [-3.5, -2.25, -0.8, 0.0, 0.6, 1.9, 3.5])
def test_calibration_recovers_the_injected_offset(
    run_uri: Path, offset: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tomo.calibrate import calibrate
    from tomo.scan import acquire

    monkeypatch.setenv("TOMO_OFFSET", str(offset))
    for index in range(3):
        acquire(index)  # Poisson noise, flat and dark fields included
    assert abs(calibrate() - offset) <= 0.25


def test_opencl_and_numpy_back_projections_agree() -> None:
    """The same filtered sinogram through both OpenCL kernels on PoCL (the CPU one, and the GPU
    one forced) and through numpy; 70 pixels is not a whole number of the CPU kernel's rows."""
    code = (
        "import json, numpy as np\n"
        "from tomo.fbp import OpenCLBackprojector, backproject_numpy\n"
        "rng = np.random.default_rng(3)\n"
        "sino = rng.standard_normal((48, 64)).astype(np.float32)\n"
        "theta = np.arange(48) * np.pi / 48\n"
        "found = {}\n"
        "for per_pixel in (None, True):\n"
        "    opencl, detail = OpenCLBackprojector.create('portable computing', per_pixel)  # by platform\n"
        "    assert opencl is not None, detail\n"
        "    assert detail.endswith('(Portable Computing Language)'), detail\n"
        "    assert opencl.per_pixel is bool(per_pixel)  # a CPU device gets the row kernel\n"
        "    for n, origin in ((64, None), (64, 32.0), (70, None)):  # iradon's grid: axis on n // 2\n"
        "        a = opencl(sino, theta, 1.37, n, origin)\n"
        "        b = backproject_numpy(sino, theta, 1.37, n, origin)\n"
        "        diff = float(np.max(np.abs(a - b)))\n"
        "        found[f'{per_pixel} {n} {origin}'] = [diff, float(np.max(np.abs(b)))]\n"
        "none, why = OpenCLBackprojector.create('no such device')\n"
        "assert none is None and why == \"no OpenCL device matching 'no such device'\", why\n"
        "print(json.dumps(found))\n"
    )
    worker_argv("gpu-check")  # fails the test, saying what to install, where no driver builds here
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert len(found) == 6, found
    for case, (diff, scale) in found.items():
        assert diff <= 1e-4 * scale, (case, found)


def reconstruction_floor(z: float, offset: float) -> float:
    """RMSE of the same FBP on perfect data (no noise, the true centre): what sampling the
    phantom's sharp edges onto the pixel grid costs, whatever the pipeline does."""
    theta = np.arange(SIZE) * np.pi / SIZE
    clean = filters.filter_sinogram(phantom.sinogram(z, theta, SIZE, offset).astype(np.float32))
    return rmse(backproject_numpy(clean, theta, offset, SIZE), phantom.image(z, SIZE))


def test_pipeline_end_to_end_on_the_local_backend(tmp_path: Path) -> None:
    spec_text = (Path(__file__).resolve().parent.parent / "examples" / "tomo" / "pipeline.yaml").read_text()
    small = (
        spec_text.replace("range: 32", "range: 4")
        .replace(
            "TOMO_SLICES: 32, TOMO_SIZE: 256, TOMO_ANGLES: 256",
            f"TOMO_SLICES: 4, TOMO_SIZE: {SIZE}, TOMO_ANGLES: {SIZE}",
        )
        .replace("array_size: 8", "array_size: 2")
    )
    spec = tmp_path / "tomo.yaml"
    spec.write_text(small)
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    launched = subprocess.run(
        [OPSCTL, "launch", str(spec), "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    watched = subprocess.run(
        [OPSCTL, "watch", run_id, "--json", "--interval", "0.2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert [s["commands"]["done"] for s in json.loads(watched.stdout)["steps"]] == [4, 4, 1, 4]

    tomo = tmp_path / "home" / "runs" / run_id / "tomo"
    report = json.loads((tomo / "report.json").read_text())
    assert abs(report["centre_offset_px"] - 2.7) <= 0.25
    floors = [reconstruction_floor(phantom.slice_z(i, 4), 2.7) for i in range(4)]
    # Noise (20,000 photons) and the calibration's error may add at most 10 % to the floor.
    assert report["rmse_max"] <= 1.10 * max(floors), (report, floors)
    montage = (tomo / "montage.png").read_bytes()
    assert montage.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(montage[16:20], "big"), int.from_bytes(montage[20:24], "big")
    assert (width, height) == (2 * SIZE + 4, 4 * SIZE + 3 * 4)


def test_the_reconstruction_bench_prints_every_result_line_whatever_is_missing() -> None:
    """bench/reconstruct.py at a toy size: with no usable OpenCL device each OpenCL figure is a
    miss with its reason, never a dropped line; the same file gives ASTRA's, measured where
    astra-toolbox is installed (`make bench`), else a miss saying why."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "reconstruct.py"),
            "--sizes",
            "32",
            "--repeat",
            "1",
            "--device",
            "none such",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    results = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("RESULT ")}
    assert sorted(results) == [
        "fbp_numpy_speedup_vs_iradon_32",
        "fbp_opencl_rmse_minus_astra_cpu_32",
        "fbp_opencl_rmse_minus_iradon_32",
        "fbp_opencl_speedup_vs_astra_cpu_32",
        "fbp_opencl_speedup_vs_iradon_32",
    ], result.stdout
    for name, line in results.items():
        if "opencl" in name:
            assert line.endswith("(not measured: no OpenCL device matching 'none such')"), line
    assert float(results["fbp_numpy_speedup_vs_iradon_32"].split()[2]) > 0
