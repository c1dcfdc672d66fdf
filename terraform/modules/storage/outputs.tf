output "bucket_name" {
  description = "Name of the run bucket."
  value       = aws_s3_bucket.runs.bucket
}

output "bucket_arn" {
  description = "ARN of the run bucket."
  value       = aws_s3_bucket.runs.arn
}

output "kms_key_arn" {
  description = "KMS key encrypting the run bucket."
  value       = aws_kms_key.bucket.arn
}
