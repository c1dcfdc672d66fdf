terraform {
  # >= 1.10 for the S3 backend's native lock file (use_lockfile), which replaces DynamoDB locking.
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: the Batch arguments used here (compute_environment_name_prefix, job queue
      # compute_environment_order and job_state_time_limit_action) have these names in 5.x.
      version = ">= 5.80, < 6.0"
    }
  }
}
