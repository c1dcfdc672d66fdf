variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "region" {
  description = "Region, for the awslogs driver."
  type        = string
}

variable "account_id" {
  description = "Account id, for the log key's policy."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the compute environments."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group of the worker instances."
  type        = string
}

variable "service_role_arn" {
  description = "Batch service role."
  type        = string
}

variable "service_role_attachment" {
  description = "Id of the service role's policy attachment; compute environments wait for it."
  type        = string
}

variable "instance_profile_arn" {
  description = "Instance profile of the worker instances."
  type        = string
}

variable "job_role_arn" {
  description = "Role the worker containers run with."
  type        = string
}

variable "cpu_image" {
  description = "CPU worker image (repository URL and tag)."
  type        = string
}

variable "gpu_image" {
  description = "GPU worker image (repository URL and tag)."
  type        = string
}

variable "cpu_instance_types" {
  description = "Instance families or types of the CPU spot compute environment."
  type        = list(string)
}

variable "cpu_max_vcpus" {
  description = "Upper bound of the CPU compute environment."
  type        = number
}

variable "gpu_instance_types" {
  description = "GPU instance families or types of the GPU compute environment."
  type        = list(string)

  validation {
    # The NVIDIA x86_64 families the ECS GPU-optimized Amazon Linux 2023 AMI (ECS_AL2023_NVIDIA)
    # runs: not g3/g3s/p2/p3 (GPUs its driver no longer supports), g4ad (AMD) or g5g (Arm).
    condition     = alltrue([for t in var.gpu_instance_types : can(regex("^(g4dn|g5|g6|g6e|g6f|gr6|gr6f|g7e|p4d|p4de|p5|p5e|p5en|p6-b200|p6-b300)(\\.[a-z0-9]+)?$", t))])
    error_message = "gpu_instance_types must be NVIDIA families ECS_AL2023_NVIDIA supports (g4dn, g5, g6, g6e, g6f, gr6, gr6f, g7e, p4d, p4de, p5, p5e, p5en, p6-b200, p6-b300), or types of them."
  }
}

variable "gpu_max_vcpus" {
  description = "Upper bound of the GPU compute environment."
  type        = number
}

variable "use_custom_gpu_ami" {
  description = "Run GPU instances on the newest AMI built by images/ami (tag opsctl:ami = gpu-worker)."
  type        = bool
}

variable "job_timeout_seconds" {
  description = "Default per-attempt timeout of the job definitions."
  type        = number

  validation {
    condition     = var.job_timeout_seconds >= 60
    error_message = "Batch timeouts are at least 60 seconds."
  }
}

variable "runnable_time_limit_seconds" {
  description = "Queues cancel jobs stuck RUNNABLE (no capacity or a misfit) after this long."
  type        = number
}

variable "log_retention_days" {
  description = "Retention of the job log group."
  type        = number
}

variable "job_state_time_limits" {
  description = "Cancel jobs stuck RUNNABLE (the queues' job_state_time_limit_action). False only for an emulator that does not keep them (moto)."
  type        = bool
  default     = true
}
