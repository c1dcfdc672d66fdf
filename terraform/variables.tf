variable "region" {
  description = "AWS region for every resource of the stack."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix of every resource name; one stack per name and region."
  type        = string
  default     = "opsctl"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2..21 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "image_tag" {
  description = "Tag of the cpu and gpu worker images the job definitions run (the deploy workflow sets the commit SHA)."
  type        = string
  default     = "latest"
}

variable "vpc_id" {
  description = "VPC for the compute environments; null uses the account's default VPC."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets for the compute environments; empty uses every subnet of the VPC."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance families or types for the CPU spot compute environment."
  type        = list(string)
  default     = ["c6i", "c7i", "m6i", "m7i"]
}

variable "cpu_max_vcpus" {
  description = "Upper bound of the CPU compute environment; it scales down to zero when idle."
  type        = number
  default     = 1024
}

variable "gpu_instance_types" {
  description = "GPU instance families or types for the GPU compute environment (GPU families only)."
  type        = list(string)
  default     = ["g5", "g6"]
}

variable "gpu_max_vcpus" {
  description = "Upper bound of the GPU compute environment; it scales down to zero when idle."
  type        = number
  default     = 512
}

variable "use_custom_gpu_ami" {
  description = "Use the Packer-built GPU AMI (images/ami, `make ami`) instead of the stock ECS_AL2023_NVIDIA image."
  type        = bool
  default     = false
}

variable "job_timeout_seconds" {
  description = "Default per-attempt timeout of the job definitions (steps override it)."
  type        = number
  default     = 3600
}

variable "runnable_time_limit_seconds" {
  description = "Jobs RUNNABLE this long for lack of capacity or a misfit are cancelled by the queue."
  type        = number
  default     = 14400
}

variable "runs_expiration_days" {
  description = "Days after which run scratch (the bucket's runs/ prefix) expires."
  type        = number
  default     = 30
}

variable "log_retention_days" {
  description = "Retention of the Batch job log group."
  type        = number
  default     = 365
}

variable "ecr_keep_images" {
  description = "Images kept per ECR repository; older ones expire."
  type        = number
  default     = 30
}

variable "github_repository" {
  description = "owner/name of the GitHub repository allowed to deploy through OIDC (its main branch only); null creates no deploy role."
  type        = string
  default     = null
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub OIDC provider; false when the account already has one."
  type        = bool
  default     = true
}

variable "terraform_state_bucket" {
  description = "Bucket of the Terraform state the deploy workflow uses (repository variable TF_STATE_BUCKET)."
  type        = string
  default     = ""
}

variable "emulator" {
  description = "True only when applying to an AWS emulator (moto, in the tests): leaves out what the emulator lacks or mishandles (the queues' job state time limits, default tags). Never set it for an AWS account."
  type        = bool
  default     = false
}
