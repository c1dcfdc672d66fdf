variable "name" {
  description = "Prefix of role names."
  type        = string
}

variable "bucket_arn" {
  description = "Run bucket the job role may read and write (runs/ only)."
  type        = string
}

variable "bucket_key_arn" {
  description = "KMS key of the run bucket."
  type        = string
}

variable "log_group_arn" {
  description = "Log group the jobs write to."
  type        = string
}

variable "region" {
  description = "Region of the stack, for the operator policy's ARNs."
  type        = string
}

variable "account_id" {
  description = "Account of the stack, for the operator policy's ARNs."
  type        = string
}
