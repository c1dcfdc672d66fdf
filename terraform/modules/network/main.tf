# The compute environments need subnets and a security group. By default they use the account's
# default VPC, so a first deployment needs no network of its own; give vpc_id/subnet_ids to use
# another one (private subnets need a NAT gateway or VPC endpoints for ECR, S3 and Logs).

data "aws_vpc" "selected" {
  id      = var.vpc_id
  default = var.vpc_id == null
}

data "aws_subnets" "selected" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.selected.id]
  }
}

# Egress only: workers fetch images and talk to S3, Batch and CloudWatch; nothing connects to them.
resource "aws_security_group" "workers" {
  # checkov:skip=CKV2_AWS_5:Attached by the Batch compute environments (modules/batch), outside this module's view.
  name_prefix = "${var.name}-workers-"
  description = "opsctl Batch workers: egress only"
  vpc_id      = data.aws_vpc.selected.id

  egress {
    description = "HTTPS to AWS APIs, ECR and S3"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}
