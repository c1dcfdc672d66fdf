#!/usr/bin/env bash
# Fail the build unless the NVIDIA driver and its OpenCL platform both work on this instance.
set -euo pipefail
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
test -s /etc/OpenCL/vendors/nvidia.icd || echo "libnvidia-opencl.so.1" | sudo tee /etc/OpenCL/vendors/nvidia.icd
# clinfo from the distribution lists the OpenCL platforms the ICD loader finds.
sudo dnf install -y -q clinfo
clinfo --list | tee /tmp/clinfo.txt
grep -qi nvidia /tmp/clinfo.txt || { echo "no NVIDIA OpenCL platform found" >&2; exit 1; }
