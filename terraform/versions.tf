terraform {
  # >= 1.10 for the S3 backend's native lock file (use_lockfile), which replaces DynamoDB locking.
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: the Batch arguments used here (compute_environment_name_prefix, job queue
      # compute_environment_order and job_state_time_limit_action) have these names in 5.x.
      # >= 5.81: aws_iam_openid_connect_provider.thumbprint_list is required before 5.81, and
      # the GitHub OIDC provider here sets none (AWS trusts GitHub's root CAs itself).
      version = ">= 5.81, < 6.0"
    }
  }
}
