"""`make ami`: build the GPU worker AMI with Packer, then switch the stack to it.

Reads the GPU image and instance profile from the infra file when the stack exists (to pre-pull
the image); without one the AMI is built without a pre-pulled image. On success it writes
terraform/gpu-ami.auto.tfvars (use_custom_gpu_ami = true), which the next `make infra` loads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
INFRA = ROOT / ".opsctl" / "infra.json"
TEMPLATE = ROOT / "images" / "ami"


def main() -> int:
    packer = shutil.which("packer")
    if packer is None:
        print("make ami: packer not found on PATH: install Packer >= 1.10 and run it again", file=sys.stderr)
        return 2
    variables = []
    if INFRA.is_file():
        outputs = {
            k: v["value"] if isinstance(v, dict) else v for k, v in json.loads(INFRA.read_text()).items()
        }
        variables = [
            f"-var=region={outputs['region']}",
            f"-var=gpu_image={outputs['gpu_image']}",
            f"-var=iam_instance_profile={outputs['instance_profile']}",
        ]
    else:
        print(f"make ami: no {INFRA.relative_to(ROOT)} yet: building without a pre-pulled GPU image")
    for argv in ([packer, "init", str(TEMPLATE)], [packer, "build", *variables, str(TEMPLATE)]):
        code = subprocess.run(argv, check=False).returncode
        if code:
            print(
                f"make ami: `{' '.join(argv[:2])}` failed (exit {code}); its output above says why",
                file=sys.stderr,
            )
            return 1
    (ROOT / "terraform" / "gpu-ami.auto.tfvars").write_text(
        "# Written by `make ami`: run GPU instances on the AMI it built.\nuse_custom_gpu_ami = true\n"
    )
    print("make ami: done; `make infra` now puts the GPU compute environment on the new AMI")
    return 0


if __name__ == "__main__":
    sys.exit(main())
