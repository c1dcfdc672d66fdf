"""`make demo`: run the tomography pipeline locally with the live table, then show the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
SPEC = Path(__file__).resolve().parent / "pipeline.yaml"


def main() -> int:
    launched = subprocess.run(
        [BIN / "opsctl", "launch", str(SPEC), "--json"], capture_output=True, text=True, check=False
    )
    if launched.returncode:
        sys.stderr.write(launched.stderr)
        return launched.returncode
    run_id = json.loads(launched.stdout)["run_id"]
    code = subprocess.run([BIN / "opsctl", "watch", run_id], check=False).returncode
    from opsctl.backends.local import LocalRun

    tomo = LocalRun.find(run_id).path / "tomo"
    report = tomo / "report.json"
    if code or not report.is_file():
        print(f"demo: run {run_id} did not finish; `opsctl status {run_id}` and `opsctl logs` say why")
        return code or 1
    result = json.loads(report.read_text())
    print(f"montage:  {tomo / 'montage.png'}  (phantom | reconstruction, slices {result['montage_slices']})")
    print(f"RMSE:     {result['rmse_mean']:.4f} mean, {result['rmse_max']:.4f} worst slice")
    print(f"centre:   {result['centre_offset_px']:+.3f} px found (2.700 injected)")
    print(f"backend:  {result['backend']}")
    page = LocalRun.find(run_id).path / "report.html"
    written = subprocess.run(
        [BIN / "opsctl", "report", run_id, "-o", str(page)], capture_output=True, text=True, check=False
    )
    if written.returncode:
        sys.stderr.write(written.stderr)
        return written.returncode
    print(f"report:   {page}  (timeline, steps, CPU time: open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
