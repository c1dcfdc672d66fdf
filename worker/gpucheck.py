"""`opsctl-worker gpu-check`: is OpenCL usable here, and if not, why and how to fix it.

Getting a GPU to work inside a container was the seed pipeline's biggest time sink: an ICD
loader, a vendor file naming the driver's OpenCL library, and a container started with the
NVIDIA runtime and the `compute` driver capability must all line up. This check looks at each
link in that order, runs a small kernel on the device a job would use and compares it with
numpy, and names the first broken link with the fix.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_VENDORS = Path("/etc/OpenCL/vendors")
KERNEL_SIZE = 1 << 16
NVIDIA_LIBRARY = "libnvidia-opencl.so.1"

KERNEL = """
__kernel void axpy(__global const float *x, __global const float *y, __global float *out, const float a) {
    int i = get_global_id(0);
    out[i] = a * x[i] + y[i];
}
"""


@dataclass
class VendorFile:
    path: str
    library: str
    loadable: bool
    error: str | None = None


@dataclass
class Report:
    vendor_files: list[VendorFile] = field(default_factory=list)
    platforms: list[dict[str, Any]] = field(default_factory=list)
    kernel: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}

    def render(self) -> str:
        lines = ["OpenCL vendor files:"]
        lines += [
            f"  {v.path}: {v.library} ({'loads' if v.loadable else 'cannot be loaded: ' + (v.error or '?')})"
            for v in self.vendor_files
        ] or ["  none"]
        lines.append("OpenCL platforms and devices:")
        for platform in self.platforms:
            lines.append(f"  {platform['name']} ({platform['version']})")
            lines += [f"    {d['type']}: {d['name']} ({d['memory_mb']} MiB)" for d in platform["devices"]]
        if not self.platforms:
            lines.append("  none")
        if self.kernel:
            k = self.kernel
            lines.append(
                f"Kernel on {k['device']}: {k['size']} elements, max error {k['max_error']:.2e}, "
                f"{k['seconds'] * 1000:.1f} ms: {'ok' if k['ok'] else 'WRONG RESULT'}"
            )
        lines.append("healthy" if self.healthy else "UNHEALTHY:")
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def vendor_files(environ: Mapping[str, str]) -> list[VendorFile]:
    """The ICD vendor files the loader reads: OCL_ICD_VENDORS (a folder or a file), else the default."""
    configured = environ.get("OCL_ICD_VENDORS")
    place = Path(configured) if configured else DEFAULT_VENDORS
    files = sorted(place.glob("*.icd")) if place.is_dir() else [place] if place.is_file() else []
    found = []
    for path in files:
        library = path.read_text(errors="replace").strip()
        try:
            ctypes.CDLL(library)
        except OSError as e:
            found.append(VendorFile(str(path), library, loadable=False, error=str(e).split(":")[-1].strip()))
        else:
            found.append(VendorFile(str(path), library, loadable=True))
    return found


def check(*, require_gpu: bool = False, environ: Mapping[str, str] | None = None) -> Report:
    """Every link from the ICD loader to a correct kernel result; `problems` names what broke."""
    environ = os.environ if environ is None else environ
    report = Report(vendor_files=vendor_files(environ))
    for vendor in report.vendor_files:
        if not vendor.loadable and NVIDIA_LIBRARY in vendor.library:
            report.problems.append(
                f"{vendor.path} names {vendor.library}, which is not there: the container was started "
                "without the NVIDIA runtime or without the `compute` driver capability. Set "
                "NVIDIA_DRIVER_CAPABILITIES=compute,utility (the GPU image does) and start it with the "
                "NVIDIA runtime (docker run --gpus all; on AWS Batch, a GPU resource requirement on a "
                "GPU queue)"
            )
        elif not vendor.loadable:
            report.problems.append(
                f"{vendor.path} names {vendor.library}, which cannot be loaded ({vendor.error})"
            )

    try:
        import pyopencl as cl
    except ImportError as e:
        report.problems.append(
            f"pyopencl cannot be imported ({e}): install the GPU extras (pip install 'opsctl[gpu]') "
            "and the OpenCL ICD loader (apt-get install ocl-icd-libopencl1)"
        )
        return report

    try:
        platforms = cl.get_platforms()
    except cl.Error as e:
        platforms = []
        detail = f" ({e})"
    else:
        detail = ""
    if not platforms:
        place = environ.get("OCL_ICD_VENDORS") or str(DEFAULT_VENDORS)
        hint = "" if report.vendor_files else f"; no vendor files in {place} (or OCL_ICD_VENDORS)"
        report.problems.append(f"no OpenCL platform{detail}{hint}")
        return report

    devices = []
    for platform in platforms:
        entry: dict[str, Any] = {
            "name": platform.name,
            "vendor": platform.vendor,
            "version": platform.version,
            "devices": [],
        }
        for device in platform.get_devices():
            kind = str(cl.device_type.to_string(device.type))  # type: ignore[operator]
            entry["devices"].append(
                {"name": device.name.strip(), "type": kind, "memory_mb": device.global_mem_size // 2**20}
            )
            devices.append((device, kind))
        report.platforms.append(entry)

    gpus = [device for device, kind in devices if "GPU" in kind]
    if require_gpu and not gpus:
        kinds = ", ".join(f"{kind} {device.name.strip()}" for device, kind in devices) or "none"
        report.problems.append(f"--require-gpu: no GPU among the OpenCL devices (found: {kinds})")
    # A job uses the first GPU; without one, the first device that builds its kernels (tomo's
    # fbp.py): where the wheel's PoCL cannot build for this CPU, Debian's beside it can.
    failures = []
    for chosen in gpus[:1] or [device for device, _ in devices]:
        try:
            report.kernel = run_kernel(cl, chosen)
            break
        except cl.Error as e:
            failures.append(_kernel_failure(chosen, e))
    if report.kernel is None:
        report.problems.append(failures[0] if failures else "the OpenCL platforms have no device")
    elif not report.kernel["ok"]:
        report.problems.append(
            f"the test kernel on {report.kernel['device']} gave wrong results "
            f"(max error {report.kernel['max_error']:.2e})"
        )
    return report


def check_apart(*, require_gpu: bool = False) -> Report:
    """`check` in a forked child, so that an OpenCL driver that kills its process (PoCL without
    a linker aborts while building the kernel) is a problem in the report, not the end of the
    worker: the caller still says what broke and exits as the contract says."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the report as JSON down the pipe, then out without clean-up
        code = 0
        try:
            os.close(read_end)
            data = json.dumps(check(require_gpu=require_gpu).to_dict()).encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) or not data:
        how = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else "an error"
        return Report(
            problems=[
                f"the OpenCL stack ended the check with {how} (PoCL does when it cannot link a kernel: "
                "install binutils, libc6-dev and libgcc-12-dev beside it); run `opsctl-worker gpu-check` "
                "in a shell to see where"
            ]
        )
    found = json.loads(data)
    return Report(
        vendor_files=[VendorFile(**v) for v in found["vendor_files"]],
        platforms=found["platforms"],
        kernel=found["kernel"],
        problems=found["problems"],
    )


def _kernel_failure(device: Any, error: Exception) -> str:
    text = " ".join(str(error).split())
    name = device.name.strip()
    if "unknown target CPU" in text:
        # An OpenCL CPU driver whose LLVM predates this processor (PoCL's cannot name it).
        return (
            f"the OpenCL compiler of {name} ({device.platform.version}) cannot build for this processor "
            "(LLVM calls it 'generic'): use an OpenCL CPU driver built with a newer LLVM, or another machine"
        )
    return f"the test kernel failed on {name}: {text[:300]}"


def run_kernel(cl: Any, device: Any) -> dict[str, Any]:
    """a*x + y on the device against numpy: the smallest proof that compute really works."""
    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.standard_normal(KERNEL_SIZE, dtype=np.float32)
    y = rng.standard_normal(KERNEL_SIZE, dtype=np.float32)
    a = np.float32(2.5)
    context = cl.Context([device])
    queue = cl.CommandQueue(context)
    flags = cl.mem_flags
    x_buf = cl.Buffer(context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=x)
    y_buf = cl.Buffer(context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=y)
    out = np.empty_like(x)
    out_buf = cl.Buffer(context, flags.WRITE_ONLY, out.nbytes)
    started = time.perf_counter()
    program = cl.Program(context, KERNEL).build()
    program.axpy(queue, x.shape, None, x_buf, y_buf, out_buf, a)
    cl.enqueue_copy(queue, out, out_buf)
    queue.finish()
    seconds = time.perf_counter() - started
    max_error = float(np.max(np.abs(out - (a * x + y))))
    return {
        "device": device.name.strip(),
        "size": KERNEL_SIZE,
        "max_error": max_error,
        "ok": max_error < 1e-5,
        "seconds": round(seconds, 4),
    }
