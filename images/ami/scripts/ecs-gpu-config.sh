#!/usr/bin/env bash
# Let the ECS agent advertise the GPUs to Batch, and keep pre-pulled images on the instance.
set -euo pipefail
sudo mkdir -p /etc/ecs
{
  echo "ECS_ENABLE_GPU_SUPPORT=true"
  # The image pre-pulled at build time must not be cleaned up before the first job uses it.
  echo "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached"
} | sudo tee -a /etc/ecs/ecs.config
