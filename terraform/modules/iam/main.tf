# Three roles, each with only what its holder does:
#  - Batch's service role, to manage the compute environments;
#  - the ECS instance role of the worker instances, to join the cluster and pull images;
#  - the job role of the containers, to read list files and write markers under runs/.
# SPOT_PRICE_CAPACITY_OPTIMIZED needs no spot fleet role.
#
# Every role the stack creates carries the permissions boundary below: the most any of them may
# ever do, whatever policy is attached to it. The GitHub deploy role may create and change
# roles only with this boundary (iam:PermissionsBoundary), so it cannot make a role, or itself,
# an administrator.

data "aws_iam_policy_document" "boundary" {
  # A permissions boundary grants nothing: it caps what the roles' own policies may grant, so
  # broad service-level actions here are a ceiling, not access.
  # checkov:skip=CKV_AWS_107:a boundary grants nothing; the roles' own policies scope their access
  # checkov:skip=CKV_AWS_109:a boundary grants nothing; it only caps the roles' own policies
  # checkov:skip=CKV_AWS_111:a boundary grants nothing; it only caps the roles' own policies
  # checkov:skip=CKV_AWS_356:a boundary grants nothing; the AWS managed policies it caps use "*" themselves
  statement {
    sid = "StackServices"
    # What the three roles' policies (two AWS managed ones among them) use, and no IAM writes.
    actions   = ["autoscaling:*", "batch:*", "ec2:*", "ecr:*", "ecs:*", "logs:*"]
    resources = ["*"]
  }

  statement {
    sid       = "RunBucket"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:ListBucket"]
    resources = [var.bucket_arn, "${var.bucket_arn}/runs/*"]
  }

  statement {
    sid       = "RunBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.bucket_key_arn]
  }

  statement {
    sid       = "ReadRoles"
    actions   = ["iam:GetInstanceProfile", "iam:GetRole"]
    resources = ["*"]
  }

  statement {
    sid       = "PassStackRoles"
    actions   = ["iam:PassRole"]
    resources = ["arn:aws:iam::*:role/${var.name}-ecs-instance-*", "arn:aws:iam::*:role/${var.name}-job-*"]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid       = "BatchServiceLinkedRoles"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["spot.amazonaws.com", "spotfleet.amazonaws.com", "autoscaling.amazonaws.com", "ecs.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "boundary" {
  name        = "${var.name}-role-boundary"
  description = "Permissions boundary of every role of the ${var.name} stack: the most any of them may do."
  policy      = data.aws_iam_policy_document.boundary.json
}

data "aws_iam_policy_document" "trust_batch" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["batch.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "batch_service" {
  name_prefix          = "${var.name}-batch-"
  assume_role_policy   = data.aws_iam_policy_document.trust_batch.json
  permissions_boundary = aws_iam_policy.boundary.arn
}

resource "aws_iam_role_policy_attachment" "batch_service" {
  role       = aws_iam_role.batch_service.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSBatchServiceRole"
}

data "aws_iam_policy_document" "trust_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name_prefix          = "${var.name}-ecs-instance-"
  assume_role_policy   = data.aws_iam_policy_document.trust_ec2.json
  permissions_boundary = aws_iam_policy.boundary.arn
}

resource "aws_iam_role_policy_attachment" "instance_ecs" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "instance" {
  name_prefix = "${var.name}-ecs-instance-"
  role        = aws_iam_role.instance.name
}

data "aws_iam_policy_document" "trust_ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "job" {
  name_prefix          = "${var.name}-job-"
  assume_role_policy   = data.aws_iam_policy_document.trust_ecs_tasks.json
  permissions_boundary = aws_iam_policy.boundary.arn
}

data "aws_iam_policy_document" "job" {
  statement {
    sid       = "ListRuns"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["runs/*"]
    }
  }

  statement {
    sid       = "ReadWriteRuns"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.bucket_arn}/runs/*"]
  }

  statement {
    sid       = "UseBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.bucket_key_arn]
  }

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.log_group_arn}:*"]
  }
}

resource "aws_iam_role_policy" "job" {
  name   = "runs-bucket"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}
