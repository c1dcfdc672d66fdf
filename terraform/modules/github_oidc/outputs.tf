output "deploy_role_arn" {
  description = "Set it as the repository variable AWS_DEPLOY_ROLE_ARN."
  value       = aws_iam_role.deploy.arn
}
