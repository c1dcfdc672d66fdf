#!/usr/bin/env bash
# Pull the GPU worker image into the AMI's Docker store: instances launched from it start jobs
# without pulling several GB from ECR, 100 times over for a 100-instance step.
set -euo pipefail
if [ -z "${GPU_IMAGE:-}" ]; then
  echo "no GPU image given (no stack yet): nothing to pre-pull; run \`make ami\` again after the first image push"
  exit 0
fi
registry="${GPU_IMAGE%%/*}"
aws ecr get-login-password --region "$AWS_REGION" | sudo docker login --username AWS --password-stdin "$registry"
sudo docker pull "$GPU_IMAGE"
sudo docker logout "$registry"
