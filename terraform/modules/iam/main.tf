# Three roles, each with only what its holder does:
#  - Batch's service role, to manage the compute environments;
#  - the ECS instance role of the worker instances, to join the cluster and pull images;
#  - the job role of the containers, to read list files and write markers under runs/ (and
#    replace the ledgers there).
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
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
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
    sid = "ReplaceLedgers"
    # A child's ledger is one object whose name holds its counts: each update writes the next
    # name and deletes the previous one (opsctl_contract/markers.py). Nothing else is deleted.
    actions   = ["s3:DeleteObject"]
    resources = ["${var.bucket_arn}/runs/*/state/*/ledger/*"]
  }

  statement {
    sid       = "UseBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.bucket_key_arn]
  }
  # No logs: the awslogs driver writes a container's output with the instance role's
  # credentials (AmazonEC2ContainerServiceforEC2Role), not the job's.
}

resource "aws_iam_role_policy" "job" {
  name   = "runs-bucket"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}

# What an operator (a scientist running `opsctl launch | watch | status | kill | resume | logs |
# list | report` and `opsctl infra definitions`) needs, and no more. The stack creates no user or
# policy for it: an administrator attaches this document (the `operator_policy` output) to the
# people's roles or groups. tests/test_permissions.py evaluates every request the operator
# commands make against it, and fails on any grant no command uses.
data "aws_iam_policy_document" "operator" {
  statement {
    sid = "ListRuns"
    # `opsctl list` lists runs/ with a delimiter, and a read of a missing object answers 404
    # (not 403) only with s3:ListBucket on the bucket (S3 API Reference, GetObject).
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }

  statement {
    sid = "ReadAndWriteRuns"
    # launch and resume write list files, work packs and the manifest; status and report
    # record a step's final state and a finished run's attempts in the manifest's folder.
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.bucket_arn}/runs/*"]
  }

  statement {
    sid       = "UseTheBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.bucket_key_arn]
  }

  statement {
    sid     = "SubmitToTheStack"
    actions = ["batch:SubmitJob"]
    resources = [
      "arn:aws:batch:${var.region}:${var.account_id}:job-queue/${var.name}-*",
      "arn:aws:batch:${var.region}:${var.account_id}:job-definition/${var.name}-*",
      "arn:aws:batch:${var.region}:${var.account_id}:job/*",
    ]
  }

  statement {
    sid       = "StopJobs"
    actions   = ["batch:TerminateJob"]
    resources = ["arn:aws:batch:${var.region}:${var.account_id}:job/*"]
  }

  statement {
    sid = "DeriveJobDefinitions"
    # A step's own image runs under a job definition derived from the stack's (docs/worker.md).
    actions   = ["batch:RegisterJobDefinition", "batch:DeregisterJobDefinition"]
    resources = ["arn:aws:batch:${var.region}:${var.account_id}:job-definition/${var.name}-*"]
  }

  statement {
    sid = "TagWhatItCreates"
    # Jobs are submitted, and derived definitions registered, with tags: tagging on creation
    # needs batch:TagResource on the new job or definition revision too.
    actions = ["batch:TagResource"]
    resources = [
      "arn:aws:batch:${var.region}:${var.account_id}:job/*",
      "arn:aws:batch:${var.region}:${var.account_id}:job-definition/${var.name}-*",
    ]
  }

  statement {
    sid       = "PassTheJobRoleToDerivedDefinitions"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.job.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadChildLogs"
    actions   = ["logs:GetLogEvents"]
    resources = ["${var.log_group_arn}:log-stream:*"]
  }

  statement {
    sid = "CheckImages"
    # launch checks that every image a step runs is in ECR: the stack's and the user's own.
    actions   = ["ecr:DescribeImages"]
    resources = ["arn:aws:ecr:${var.region}:${var.account_id}:repository/*"]
  }

  statement {
    sid = "Describe"
    # Calls AWS authorises on "*" only: jobs, queues, definitions and compute environments
    # (status, watch, report), the log group's existence (logs), instance types and spot prices
    # (report's cost estimate).
    actions = [
      "batch:DescribeComputeEnvironments", "batch:DescribeJobDefinitions", "batch:DescribeJobQueues",
      "batch:DescribeJobs", "batch:ListJobs", "ec2:DescribeInstanceTypes", "ec2:DescribeSpotPriceHistory",
      "logs:DescribeLogGroups", "pricing:GetProducts",
    ]
    resources = ["*"]
  }
}
