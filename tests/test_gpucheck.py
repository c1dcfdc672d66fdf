"""`opsctl-worker gpu-check` against a real OpenCL stack: the ICD loader and PoCL on the CPU.

The PoCL in the pyopencl wheel compiles kernels with LLVM 14, which cannot name processors newer
than it (AMD family 26, "Zen 5", for one); Debian's pocl-opencl-icd (PoCL 3.1, LLVM 15) can, and
registers itself in /etc/OpenCL/vendors beside the wheel's. `make test` installs it where the
wheel's cannot build (tools/system.sh), so these tests run the kernel natively on every machine.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker import gpucheck


@functools.cache
def host_compiles() -> bool:
    """Can an OpenCL driver here build a kernel for this machine's own CPU?"""
    report = gpucheck.check()
    return not any("cannot build for this processor" in p for p in report.problems)


def worker_argv(*args: str) -> list[str]:
    if not host_compiles():  # said, and failed in CI, where `make system` has run
        why = "no OpenCL driver here builds for this CPU: `make system` installs Debian's pocl-opencl-icd"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return [sys.executable, "-m", "worker", *args]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OCL_ICD_VENDORS", "OCL_ICD_FILENAMES")}
    return subprocess.run(
        worker_argv(*args), env={**clean, **env}, capture_output=True, text=True, timeout=300
    )


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_pocl_cpu_device_is_healthy() -> None:
    result = run("gpu-check", "--json")
    report = report_of(result)
    assert result.returncode == 0, report["problems"]
    assert report["healthy"] is True
    # The wheel's PoCL, and Debian's beside it where the wheel's cannot build for this CPU.
    pocl = [p for p in report["platforms"] if "Portable Computing Language" in p["name"]]
    assert pocl and all("CPU" in d["type"] for p in pocl for d in p["devices"]), pocl
    kernel = report["kernel"]
    assert kernel["ok"] is True and kernel["size"] == gpucheck.KERNEL_SIZE and kernel["max_error"] < 1e-5


def test_require_gpu_on_a_cpu_only_machine() -> None:
    result = run("gpu-check", "--require-gpu")
    assert result.returncode == 1
    assert "UNHEALTHY:" in result.stdout
    assert "--require-gpu: no GPU among the OpenCL devices (found: ALL | CPU pthread-" in result.stdout


def test_nvidia_vendor_file_without_the_driver_library(tmp_path: Path) -> None:
    """What a container started without the `compute` capability looks like from inside."""
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "nvidia.icd").write_text("libnvidia-opencl.so.1\n")
    result = run("gpu-check", "--json", "--require-gpu", OCL_ICD_VENDORS=str(vendors))
    report = report_of(result)
    assert result.returncode == 1 and report["healthy"] is False
    [vendor] = report["vendor_files"]
    assert (vendor["library"], vendor["loadable"]) == ("libnvidia-opencl.so.1", False)
    first = report["problems"][0]
    assert first.startswith(f"{vendors / 'nvidia.icd'} names libnvidia-opencl.so.1, which is not there")
    assert "without the NVIDIA runtime or without the `compute` driver capability" in first
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in first


def test_a_compiler_that_cannot_target_the_cpu_is_named() -> None:
    import pyopencl as cl

    device = cl.get_platforms()[0].get_devices()[0]
    message = gpucheck._kernel_failure(
        device, RuntimeError("clBuildProgram failed: error: unknown target CPU 'generic'")
    )
    assert "cannot build for this processor" in message and "LLVM" in message
    other = gpucheck._kernel_failure(device, RuntimeError("out of resources"))
    assert other.startswith("the test kernel failed on") and "out of resources" in other


def test_preflight_stops_a_gpu_step_on_a_machine_without_gpu(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    (tmp_path / "list.txt").write_text(f"touch {ran}\n")
    result = run(
        "run",
        "--preflight-gpu",
        LIST_FILE_S3_PATH=str(tmp_path / "list.txt"),
        OPSCTL_STATE_URI=str(tmp_path / "state"),
        OPSCTL_STEP="fbp",
    )
    assert result.returncode == 1
    assert "--require-gpu: no GPU" in result.stderr
    assert not ran.exists(), "no command ran"


def test_the_gpu_bench_script_says_why_each_figure_is_missing_on_a_machine_without_gpu() -> None:
    """bench/gpu.sh, the prepared GPU run, on its CPU-only path: every RESULT line is printed as
    a miss with its reason, and the script fails because the GPU check does."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OCL_ICD_VENDORS", None)
    result = subprocess.run(
        ["bash", str(root / "bench" / "gpu.sh"), "--sizes", "32", "--repeat", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    results = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("RESULT ")}
    assert result.returncode == 1, result.stdout + result.stderr
    assert results["gpu_check_healthy"].startswith("RESULT gpu_check_healthy 0 flag")
    for name in ("gpu_fbp_gups_32", "gpu_fbp_bandwidth_share_32", "gpu_fbp_vs_astra_cuda_32"):
        assert "(not measured: " in results[name], results[name]
    assert "no OpenCL device matching 'NVIDIA'" in results["gpu_fbp_gups_32"]
