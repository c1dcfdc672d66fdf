output "subnet_ids" {
  description = "Subnets of the compute environments."
  value       = length(var.subnet_ids) > 0 ? var.subnet_ids : data.aws_subnets.selected.ids
}

output "security_group_id" {
  description = "Egress-only security group of the workers."
  value       = aws_security_group.workers.id
}
