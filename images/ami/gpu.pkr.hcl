# The GPU worker AMI: Amazon's ECS GPU-optimized Amazon Linux 2023 image, plus what makes a
# 100-instance GPU step start fast and fail early:
#  - the GPU worker image pre-pulled, so 100 instances do not pull several GB each from ECR;
#  - ECS_ENABLE_GPU_SUPPORT set, so the agent registers the GPUs with Batch;
#  - a build-time check that the driver (nvidia-smi) and OpenCL (an NVIDIA platform) work.
# It leaves out the ECS agent state of the build instance: the agent that ran during the build is
# stopped and its checkpoint (/var/lib/ecs/data) removed, so that each instance launched from the
# AMI registers with the cluster as itself (scripts/clear-ecs-state.sh).
# Terraform finds the newest build by its tag when use_custom_gpu_ami = true.

packer {
  required_version = ">= 1.10"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type        = string
  description = "Region to build in (the stack's region)."
  default     = "us-east-1"
}

variable "instance_type" {
  type        = string
  description = "GPU instance to build on: the checks need a real GPU."
  default     = "g5.xlarge"
}

variable "gpu_image" {
  type        = string
  description = "GPU worker image to pre-pull (the gpu_image infra output); empty builds the AMI without one."
  default     = ""
}

variable "iam_instance_profile" {
  type        = string
  description = "Instance profile of the build instance, to pull from ECR (the instance_profile infra output)."
  default     = ""
}

variable "name" {
  type        = string
  description = "Stack name (the Terraform `name` variable), recorded in the AMI's tags."
  default     = "opsctl"
}

source "amazon-ebs" "gpu_worker" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = "${var.name}-gpu-worker-{{timestamp}}"
  ssh_username  = "ec2-user"

  iam_instance_profile = var.iam_instance_profile == "" ? null : var.iam_instance_profile

  source_ami_filter {
    filters = {
      # EC2 matches the whole name: al2023-ami-ecs-gpu-hvm-2023.0.20260805-kernel-6.1-x86_64-ebs
      name                = "al2023-ami-ecs-gpu-hvm-*-x86_64-ebs"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  # IMDSv2 only, for the build instance and for instances launched from the AMI.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 100
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    "opsctl:ami"   = "gpu-worker" # what Terraform's data "aws_ami" looks up
    "opsctl:stack" = var.name
    "opsctl:image" = var.gpu_image
    "source_ami"   = "{{ .SourceAMIName }}"
  }
}

build {
  sources = ["source.amazon-ebs.gpu_worker"]

  provisioner "shell" {
    script = "${path.root}/scripts/ecs-gpu-config.sh"
  }

  provisioner "shell" {
    script           = "${path.root}/scripts/check-gpu.sh"
    environment_vars = ["GPU_IMAGE=${var.gpu_image}"]
  }

  provisioner "shell" {
    script           = "${path.root}/scripts/prepull-image.sh"
    environment_vars = ["GPU_IMAGE=${var.gpu_image}", "AWS_REGION=${var.region}"]
  }

  # Last, after everything that could start or use the agent: stop it and clear its checkpoint.
  # As root (Packer's documented sudo form), so the script itself needs no sudo.
  provisioner "shell" {
    script          = "${path.root}/scripts/clear-ecs-state.sh"
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash '{{ .Path }}'"
  }

  post-processor "manifest" {
    output     = "${path.root}/manifest.json"
    strip_path = true
  }
}
