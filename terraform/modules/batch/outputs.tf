output "cpu_queue_arn" {
  description = "CPU job queue."
  value       = aws_batch_job_queue.queue["cpu"].arn
}

output "gpu_queue_arn" {
  description = "GPU job queue."
  value       = aws_batch_job_queue.queue["gpu"].arn
}

output "cpu_job_definition_arn" {
  description = "CPU job definition."
  value       = aws_batch_job_definition.worker["cpu"].arn
}

output "gpu_job_definition_arn" {
  description = "GPU job definition."
  value       = aws_batch_job_definition.worker["gpu"].arn
}

output "log_group_name" {
  description = "Log group of the jobs."
  value       = aws_cloudwatch_log_group.jobs.name
}

output "log_group_arn" {
  description = "Log group of the jobs (ARN)."
  value       = aws_cloudwatch_log_group.jobs.arn
}

output "log_kms_key_arn" {
  description = "KMS key of the job log group."
  value       = aws_kms_key.logs.arn
}
