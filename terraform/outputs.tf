# Exactly the keys the AWS backend reads (DESIGN §3.4); `opsctl infra output` saves them as
# .opsctl/infra.json in the shape of `terraform output -json`.

output "region" {
  description = "Region of the stack."
  value       = var.region
}

output "bucket" {
  description = "Run bucket: manifests, list files and markers under runs/."
  value       = module.storage.bucket_name
}

output "cpu_queue" {
  description = "Job queue of the CPU spot compute environment."
  value       = module.batch.cpu_queue_arn
}

output "gpu_queue" {
  description = "Job queue of the GPU compute environment."
  value       = module.batch.gpu_queue_arn
}

output "cpu_job_definition" {
  description = "Job definition running the CPU worker image."
  value       = module.batch.cpu_job_definition_arn
}

output "gpu_job_definition" {
  description = "Job definition running the GPU (OpenCL) worker image."
  value       = module.batch.gpu_job_definition_arn
}

output "cpu_image" {
  description = "CPU worker image the job definition runs."
  value       = "${module.ecr.repository_urls["cpu"]}:${var.image_tag}"
}

output "gpu_image" {
  description = "GPU worker image the job definition runs."
  value       = "${module.ecr.repository_urls["gpu"]}:${var.image_tag}"
}

output "log_group" {
  description = "CloudWatch Logs group of the jobs."
  value       = module.batch.log_group_name
}

output "instance_profile" {
  description = "Instance profile of the worker instances; `make ami` builds with it to pull the GPU image."
  value       = module.iam.instance_profile_name
}

output "deploy_role_arn" {
  description = "Role the deploy workflow assumes (repository variable AWS_DEPLOY_ROLE_ARN); null without github_repository."
  value       = one(module.github_oidc[*].deploy_role_arn)
}

output "operator_policy" {
  description = "IAM policy document (JSON) an administrator attaches to the people who run `opsctl` against this stack (README, \"Operator permissions\")."
  value       = module.iam.operator_policy
}
