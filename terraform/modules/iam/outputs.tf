output "batch_service_role_arn" {
  description = "Batch service role."
  value       = aws_iam_role.batch_service.arn
}

output "batch_service_role_attachment_id" {
  description = "The service role's policy attachment: compute environments depend on it, or their deletion hangs in DELETING."
  value       = aws_iam_role_policy_attachment.batch_service.id
}

output "instance_profile_arn" {
  description = "Instance profile of the worker instances."
  value       = aws_iam_instance_profile.instance.arn
}

output "job_role_arn" {
  description = "Role of the worker containers."
  value       = aws_iam_role.job.arn
}

output "instance_profile_name" {
  description = "Name of the worker instances' instance profile."
  value       = aws_iam_instance_profile.instance.name
}

output "boundary_arn" {
  description = "Permissions boundary every role of the stack carries (and the deploy role may only create roles with)."
  value       = aws_iam_policy.boundary.arn
}

output "operator_policy" {
  description = "IAM policy document (JSON) of what opsctl's operator commands need: attach it to the people who run pipelines."
  value       = data.aws_iam_policy_document.operator.json
}
