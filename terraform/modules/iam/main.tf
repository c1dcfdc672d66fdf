# Three roles, each with only what its holder does:
#  - Batch's service role, to manage the compute environments;
#  - the ECS instance role of the worker instances, to join the cluster and pull images;
#  - the job role of the containers, to read list files and write markers under runs/.
# SPOT_PRICE_CAPACITY_OPTIMIZED needs no spot fleet role.

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
  name_prefix        = "${var.name}-batch-"
  assume_role_policy = data.aws_iam_policy_document.trust_batch.json
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
  name_prefix        = "${var.name}-ecs-instance-"
  assume_role_policy = data.aws_iam_policy_document.trust_ec2.json
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
  name_prefix        = "${var.name}-job-"
  assume_role_policy = data.aws_iam_policy_document.trust_ecs_tasks.json
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
