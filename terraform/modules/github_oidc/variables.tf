variable "name" {
  description = "Stack name: the deploy role may touch only resources named after it."
  type        = string
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose main branch may assume the deploy role."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "create_oidc_provider" {
  description = "Create the account's GitHub OIDC provider (false when the account already has one)."
  type        = bool
  default     = true
}

variable "state_bucket" {
  description = "Bucket of the Terraform state the deploy workflow uses (TF_STATE_BUCKET)."
  type        = string
}

variable "region" {
  description = "Region of the stack."
  type        = string
}

variable "account_id" {
  description = "Account of the stack."
  type        = string
}

variable "permissions_boundary_arn" {
  description = "The stack's permissions boundary, which the deploy role refreshes."
  type        = string
}

variable "repository_arns" {
  description = "The worker image repositories the deploy pushes to."
  type        = list(string)
}

variable "job_role_arn" {
  description = "The job role the job definitions name (the deploy passes it to ECS tasks)."
  type        = string
}

variable "bucket_arn" {
  description = "The run bucket, which the deploy refreshes."
  type        = string
}

variable "kms_key_arns" {
  description = "The stack's KMS keys (run bucket, repositories, logs), which the deploy refreshes."
  type        = list(string)
}

variable "log_group_arn" {
  description = "The job log group, which the deploy refreshes."
  type        = string
}

variable "reads_gpu_ami" {
  description = "Whether the stack looks up the custom GPU AMI (use_custom_gpu_ami): the refresh then describes images."
  type        = bool
}
