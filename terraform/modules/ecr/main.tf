# One repository per worker image. Tags are immutable, so a job definition that names a commit
# SHA always runs exactly that build.
#
# Scanning is set per repository (scan_on_push), never by the registry's scanning configuration:
# that one is a single setting per account and region, so managing it here would downgrade an
# ENHANCED (Inspector) setup for every repository of the account, two stacks would fight over
# it, and a destroy would reset it.

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "ecr" {
  description         = "${var.name} ECR repositories"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      # The account administers the key; ECR uses it through grants on behalf of IAM principals.
      Sid       = "AccountAdministers"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

resource "aws_ecr_repository" "image" {
  for_each             = toset(var.images)
  name                 = "${var.name}/${each.key}"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.ecr.arn
  }
}

resource "aws_ecr_lifecycle_policy" "image" {
  for_each   = aws_ecr_repository.image
  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last ${var.keep_images} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.keep_images
      }
      action = { type = "expire" }
    }]
  })
}
