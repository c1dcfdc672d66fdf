output "repository_urls" {
  description = "Repository URL per image."
  value       = { for image, repo in aws_ecr_repository.image : image => repo.repository_url }
}

output "repository_arns" {
  description = "Repository ARN per image."
  value       = { for image, repo in aws_ecr_repository.image : image => repo.arn }
}

output "kms_key_arn" {
  description = "KMS key of the repositories."
  value       = aws_kms_key.ecr.arn
}
