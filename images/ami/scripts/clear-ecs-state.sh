#!/usr/bin/env bash
# Leave no ECS agent state in the AMI. The agent starts while Packer's build instance runs and
# checkpoints what it learnt there (the instance it is, the cluster, a registration token) to
# /var/lib/ecs/data; instances launched from an image that carries that checkpoint can fail to
# register with their cluster (amazon-ecs-agent#858, #2738). AWS Batch's guide to custom compute
# resource AMIs says: stop the agent, then remove the checkpoint files in /var/lib/ecs/data/.
#
# The last provisioner, run as root (gpu.pkr.hcl's execute_command). It keeps, on purpose:
#  - /etc/ecs/ecs.config and /var/lib/ecs/ecs.config: GPU support and prefer-cached pulls;
#  - every Docker image (no prune): the pre-pulled worker image is the point of this AMI, and
#    the agent's own and pause images are the stock AMI's;
#  - /var/cache/ecs: the agent image tarball and ecs-init's state, which it loads at boot;
#  - the ecs unit enabled: only this boot's agent is stopped, each new instance starts its own.
# ECS_ROOT prefixes the paths, so that the tests can run this script against a scratch tree.
set -euo pipefail

data="${ECS_ROOT:-}/var/lib/ecs/data"

# Stop before removing: the agent saves its state once more as it exits (its SIGTERM handler's
# final save), so a checkpoint removed while it runs is written again.
systemctl stop ecs
# ecs-init runs the agent as the container ecs-agent and stops it with the unit; one started by
# other means would still be running, and would write the checkpoint in its turn.
if [ "$(docker inspect --format '{{.State.Running}}' ecs-agent 2>/dev/null || true)" = true ]; then
  docker stop ecs-agent
fi
if systemctl is-active --quiet ecs; then
  echo "clear-ecs-state.sh: the ecs unit is still active after \`systemctl stop ecs\`" >&2
  exit 1
fi
if [ "$(docker inspect --format '{{.State.Running}}' ecs-agent 2>/dev/null || true)" = true ]; then
  echo "clear-ecs-state.sh: the ecs-agent container is still running after \`docker stop\`" >&2
  exit 1
fi

if [ -d "$data" ]; then
  # The directory's contents, dot files included, but not the directory: its SELinux label
  # comes with the ecs-init package. Whatever cannot be removed is reported just below.
  find "$data" -mindepth 1 -delete || true
  left="$(find "$data" -mindepth 1 2>&1 || true)"
  if [ -n "$left" ]; then
    echo "clear-ecs-state.sh: $data is not empty; instances launched from this AMI could fail to register with their cluster:" >&2
    printf '%s\n' "$left" >&2
    exit 1
  fi
fi
echo "ECS agent stopped and its state removed from $data; /etc/ecs/ecs.config and the Docker images kept"
