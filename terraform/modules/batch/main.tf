# AWS Batch: a CPU spot environment and a GPU environment, one queue each, one job definition
# each. Both environments scale to zero vCPUs, so an idle stack runs no instances.

locals {
  # The same rules opsctl sends with every SubmitJob (docs/cli.md): first match wins, and no
  # match means retry, hence the catch-all EXIT at the end.
  retry_rules = [
    { on_status_reason = "Host EC2*", on_reason = null, on_exit_code = null, action = "RETRY" },
    { on_status_reason = null, on_reason = "CannotPullContainerError*", on_exit_code = null, action = "EXIT" },
    { on_status_reason = null, on_reason = null, on_exit_code = "2", action = "EXIT" },
    { on_status_reason = null, on_reason = null, on_exit_code = "*", action = "RETRY" },
    { on_status_reason = null, on_reason = "*", on_exit_code = null, action = "EXIT" },
  ]

  # Jobs waiting RUNNABLE for one of these reasons will not start by waiting longer.
  stuck_reasons = [
    "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
  ]

  queues = {
    cpu = { instance_types = var.cpu_instance_types, max_vcpus = var.cpu_max_vcpus, image = var.cpu_image }
    gpu = { instance_types = var.gpu_instance_types, max_vcpus = var.gpu_max_vcpus, image = var.gpu_image }
  }
}

# --- logs -----------------------------------------------------------------------------------

resource "aws_kms_key" "logs" {
  description         = "${var.name} Batch job logs"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${var.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # CloudWatch Logs encrypts this group's events with the key, and nothing else.
        Sid       = "LogsUseForThisGroup"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnEquals = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:aws:logs:${var.region}:${var.account_id}:log-group:/aws/batch/${var.name}"
          }
        }
      },
    ]
  })
}

resource "aws_cloudwatch_log_group" "jobs" {
  name              = "/aws/batch/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

# --- instances ------------------------------------------------------------------------------

data "aws_ami" "gpu_worker" {
  count       = var.use_custom_gpu_ami ? 1 : 0
  most_recent = true
  owners      = ["self"]

  filter {
    name   = "tag:opsctl:ami"
    values = ["gpu-worker"]
  }
}

resource "aws_launch_template" "worker" {
  for_each    = local.queues
  name_prefix = "${var.name}-${each.key}-"
  description = "opsctl ${each.key} workers: IMDSv2 only, encrypted gp3 root volume"

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # One hop: the instance itself reaches the metadata, containers do not. They get the job
    # role from the ECS credentials endpoint and the region from AWS_DEFAULT_REGION (opsctl
    # sets it at submit), so nothing in a job needs the instance's metadata or its role.
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_type           = "gp3"
      volume_size           = each.key == "gpu" ? 100 : 50
      encrypted             = true
      delete_on_termination = true
    }
  }
}

# --- compute environments, queues -----------------------------------------------------------

resource "aws_batch_compute_environment" "cpu" {
  compute_environment_name_prefix = "${var.name}-cpu-"
  type                            = "MANAGED"
  service_role                    = var.service_role_arn

  compute_resources {
    type                = "SPOT"
    allocation_strategy = "SPOT_PRICE_CAPACITY_OPTIMIZED"
    min_vcpus           = 0
    max_vcpus           = var.cpu_max_vcpus
    instance_type       = var.cpu_instance_types
    subnets             = var.subnet_ids
    security_group_ids  = [var.security_group_id]
    instance_role       = var.instance_profile_arn

    # Named, not left to Batch's default: environments created before 2026-01-12 default to
    # ECS_AL2 (Amazon Linux 2) and stay on it, later ones get ECS_AL2023. Both queues then run
    # the same Amazon Linux 2023 base, whenever the stack was first applied.
    ec2_configuration {
      image_type = "ECS_AL2023"
    }

    launch_template {
      launch_template_id = aws_launch_template.worker["cpu"].id
      version            = aws_launch_template.worker["cpu"].latest_version
    }
  }

  lifecycle {
    # A replacement comes up before the queue lets go of the old one.
    create_before_destroy = true
    # Batch moves desired_vcpus as it scales; a plan must not fight it.
    ignore_changes = [compute_resources[0].desired_vcpus]
  }

  # Deleting the environment needs the service role's permissions until it is gone.
  depends_on = [var.service_role_attachment]
}

resource "aws_batch_compute_environment" "gpu" {
  compute_environment_name_prefix = "${var.name}-gpu-"
  type                            = "MANAGED"
  service_role                    = var.service_role_arn

  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT_PROGRESSIVE"
    min_vcpus           = 0
    max_vcpus           = var.gpu_max_vcpus
    instance_type       = var.gpu_instance_types
    subnets             = var.subnet_ids
    security_group_ids  = [var.security_group_id]
    instance_role       = var.instance_profile_arn

    ec2_configuration {
      image_type        = "ECS_AL2023_NVIDIA"
      image_id_override = var.use_custom_gpu_ami ? data.aws_ami.gpu_worker[0].id : null
    }

    launch_template {
      launch_template_id = aws_launch_template.worker["gpu"].id
      version            = aws_launch_template.worker["gpu"].latest_version
    }
  }

  lifecycle {
    create_before_destroy = true
    ignore_changes        = [compute_resources[0].desired_vcpus]
  }

  depends_on = [var.service_role_attachment]
}

locals {
  environments = {
    cpu = aws_batch_compute_environment.cpu.arn
    gpu = aws_batch_compute_environment.gpu.arn
  }
}

resource "aws_batch_job_queue" "queue" {
  for_each = local.environments
  name     = "${var.name}-${each.key}"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = each.value
  }

  dynamic "job_state_time_limit_action" {
    for_each = var.job_state_time_limits ? local.stuck_reasons : []
    content {
      action           = "CANCEL"
      max_time_seconds = var.runnable_time_limit_seconds
      reason           = job_state_time_limit_action.value
      state            = "RUNNABLE"
    }
  }
}

# --- job definitions ------------------------------------------------------------------------

resource "aws_batch_job_definition" "worker" {
  for_each              = local.queues
  name                  = "${var.name}-${each.key}"
  type                  = "container"
  platform_capabilities = ["EC2"]
  propagate_tags        = true

  container_properties = jsonencode({
    image = each.value.image
    # The image's entry point is opsctl-worker; a GPU job first proves its GPU works.
    command = each.key == "gpu" ? ["run", "--preflight-gpu"] : ["run"]
    # Requests of a step that sets none; steps override vcpus, memory and gpus at submit.
    resourceRequirements = concat(
      [{ type = "VCPU", value = "1" }, { type = "MEMORY", value = "2048" }],
      each.key == "gpu" ? [{ type = "GPU", value = "1" }] : [],
    )
    jobRoleArn             = var.job_role_arn
    readonlyRootFilesystem = false # commands write scratch files in the working directory
    privileged             = false
    # An init process as PID 1 reaps what a command leaves behind (a background child that
    # outlives it) and passes TerminateJob's SIGTERM on to the worker; `launch --containers`
    # runs the same way (docker run --init).
    linuxParameters = { initProcessEnabled = true }
    environment     = []
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.jobs.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = each.key
      }
    }
  })

  retry_strategy {
    attempts = 3
    dynamic "evaluate_on_exit" {
      for_each = local.retry_rules
      content {
        on_status_reason = evaluate_on_exit.value.on_status_reason
        on_reason        = evaluate_on_exit.value.on_reason
        on_exit_code     = evaluate_on_exit.value.on_exit_code
        action           = evaluate_on_exit.value.action
      }
    }
  }

  timeout {
    attempt_duration_seconds = var.job_timeout_seconds
  }
}
