variable "name" {
  description = "Stack name: the deploy role may manage only resources named after it."
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
  description = "The stack's permissions boundary: every role the deploy role creates or changes must carry it."
  type        = string
}
