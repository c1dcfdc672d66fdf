#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU, as one script:
#   1. `opsctl-worker gpu-check --require-gpu`, the GPU image's preflight, with NVIDIA's OpenCL;
#   2. bench/gpu_backprojection.py: tomo's OpenCL back-projection at 2048^2 / 2048 angles and
#      4096^2 / 4096 angles (G updates/s, share of the memory bandwidth), against ASTRA's
#      BP_CUDA where astra-toolbox imports with CUDA.
# On a machine without one it runs all the same and says why each figure is missing.
#
# A machine without pyopencl and structlog, which cannot fetch packages, gets them as wheels in
# .whl/ (installed into /tmp/site).
# Where the driver's libnvidia-opencl.so.1 exists but no vendor file names it (a container
# without the GPU image's /etc/OpenCL/vendors/nvidia.icd), one is written under /tmp.
#
# Usage: bench/gpu.sh [gpu_backprojection.py options, e.g. --sizes 1024]
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if ! "$python" -c "import pyopencl, structlog" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu.sh: the carried wheels in .whl/ do not install" >&2; exit 2; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PWD/examples/tomo${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "${OCL_ICD_VENDORS:-}" ] && ! grep -qs nvidia /etc/OpenCL/vendors/*.icd; then
  library=$( (ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1/ {print $NF; exit}') )
  [ -n "$library" ] || library=$(find /usr/local/nvidia /usr/lib /usr/lib64 -name 'libnvidia-opencl.so.1*' 2>/dev/null | head -n 1)
  if [ -n "$library" ]; then
    mkdir -p /tmp/opencl-vendors && cp /etc/OpenCL/vendors/*.icd /tmp/opencl-vendors/ 2>/dev/null
    echo "$library" >/tmp/opencl-vendors/nvidia.icd
    export OCL_ICD_VENDORS=/tmp/opencl-vendors
    echo "gpu.sh: no vendor file names NVIDIA's OpenCL library; using $library"
  fi
fi

command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== opsctl-worker gpu-check --require-gpu"
"$python" -m worker gpu-check --require-gpu
check=$?
echo "== bench/gpu_backprojection.py"
"$python" bench/gpu_backprojection.py "$@"
bench=$?
echo "RESULT gpu_check_healthy $([ "$check" -eq 0 ] && echo 1 || echo 0) flag target == 1"
exit $(( check != 0 ? check : bench ))
