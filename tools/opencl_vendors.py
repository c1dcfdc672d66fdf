"""Write an OpenCL vendors folder naming Intel's CPU runtime of this environment by path.

Intel's wheel ships an .icd file that points at its build machine's prefix, so the loader cannot
use it as installed. `make bench OPENCL_CPU=intel` writes one naming the libintelocl.so under
this environment's lib/ and points OCL_ICD_VENDORS at the folder; the PoCL bundled with
pyopencl is found by pyopencl's loader either way.

Usage: python tools/opencl_vendors.py FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    library = Path(sys.prefix) / "lib" / "libintelocl.so"
    if not library.is_file():
        print(f"opencl_vendors: {library} is missing (pip install 'opsctl[opencl-cpu]')", file=sys.stderr)
        return 2
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    icd = folder / "intel-cpu.icd"
    icd.write_text(f"{library.resolve()}\n")
    print(f"{icd} -> {library.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
