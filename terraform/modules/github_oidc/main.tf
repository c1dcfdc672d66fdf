# The role GitHub Actions assumes through OIDC to deploy: no access keys anywhere. Only this
# repository's main branch can assume it (the `sub` claim), and only for sts.amazonaws.com.
#
# A deploy pushes the two worker images and rolls the job definitions to their tag: `opsctl
# infra apply` refreshes every resource of the state, registers a revision of each job
# definition and deregisters the old one. That is all this role may do. Creating, changing or
# deleting anything else (roles, buckets, keys, compute environments, queues) is an
# administrator's apply; a deploy whose plan would do it stops before applying (README,
# "Images and deploys"). So the role holds no IAM write at all: it can neither raise itself
# nor make any role more powerful, and it passes only the job role, only to ECS tasks, because
# a job definition names it.
#
# Every action here is one the deploy makes: tests/test_permissions.py records the requests of
# `opsctl infra push` and of the deploy workflow's apply, evaluates each against this policy
# with a real IAM evaluator, and fails on a grant no request needs.

locals {
  issuer = "token.actions.githubusercontent.com"
}

resource "aws_iam_openid_connect_provider" "github" {
  count          = var.create_oidc_provider ? 1 : 0
  url            = "https://${local.issuer}"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_openid_connect_provider" "github" {
  count = var.create_oidc_provider ? 0 : 1
  url   = "https://${local.issuer}"
}

data "aws_iam_policy_document" "trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.create_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = ["repo:${var.github_repository}:ref:refs/heads/main"]
    }
  }
}

resource "aws_iam_role" "deploy" {
  name_prefix          = "${var.name}-deploy-"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "deploy" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"] # AWS authorises it on "*" only
    resources = ["*"]
  }

  statement {
    sid = "PushToAndReadTheStackRepositories"
    # The push (ECR User Guide, "IAM permissions for pushing an image"), then the refresh.
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload", "ecr:InitiateLayerUpload",
      "ecr:PutImage", "ecr:UploadLayerPart", "ecr:DescribeRepositories", "ecr:GetLifecyclePolicy",
      "ecr:ListTagsForResource",
    ]
    resources = var.repository_arns
  }

  statement {
    sid = "RollTheJobDefinitions"
    # A revision registered with the stack's default tags needs batch:TagResource too.
    actions   = ["batch:RegisterJobDefinition", "batch:DeregisterJobDefinition", "batch:TagResource"]
    resources = ["arn:aws:batch:${var.region}:${var.account_id}:job-definition/${var.name}-*"]
  }

  statement {
    sid = "PassTheJobRoleToTheJobDefinitions"
    # RegisterJobDefinition names the job role (containerProperties.jobRoleArn).
    actions   = ["iam:PassRole"]
    resources = [var.job_role_arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid = "RefreshWhatAwsAuthorisesOnStarOnly"
    actions = concat(
      [
        "batch:DescribeComputeEnvironments", "batch:DescribeJobDefinitions", "batch:DescribeJobQueues",
        "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeLaunchTemplates", "ec2:DescribeRouteTables",
        "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs", "logs:DescribeLogGroups",
      ],
      var.reads_gpu_ami ? ["ec2:DescribeImages"] : [],
    )
    resources = ["*"]
  }

  statement {
    sid       = "RefreshTheVpc"
    actions   = ["ec2:DescribeVpcAttribute"]
    resources = ["arn:aws:ec2:${var.region}:${var.account_id}:vpc/*"]
  }

  statement {
    sid = "RefreshTheRoles"
    # The stack's roles, this one included: Terraform refreshes every resource in its state.
    actions = ["iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies", "iam:ListRolePolicies"]
    resources = [
      for role in ["batch", "ecs-instance", "job", "deploy"] : "arn:aws:iam::${var.account_id}:role/${var.name}-${role}-*"
    ]
  }

  statement {
    sid       = "RefreshTheInstanceProfile"
    actions   = ["iam:GetInstanceProfile"]
    resources = ["arn:aws:iam::${var.account_id}:instance-profile/${var.name}-ecs-instance-*"]
  }

  statement {
    sid       = "RefreshTheBoundary"
    actions   = ["iam:GetPolicy", "iam:GetPolicyVersion"]
    resources = [var.permissions_boundary_arn]
  }

  statement {
    sid       = "RefreshTheOidcProvider"
    actions   = ["iam:GetOpenIDConnectProvider"]
    resources = ["arn:aws:iam::${var.account_id}:oidc-provider/${local.issuer}"]
  }

  statement {
    sid       = "RefreshTheKeys"
    actions   = ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags"]
    resources = var.kms_key_arns
  }

  statement {
    sid       = "RefreshTheLogGroup"
    actions   = ["logs:ListTagsForResource"]
    resources = [var.log_group_arn]
  }

  statement {
    sid = "RefreshTheRunBucket"
    # What the provider reads of a bucket (it tolerates only "not implemented" style errors).
    actions = [
      "s3:GetAccelerateConfiguration", "s3:GetBucketAcl", "s3:GetBucketCORS", "s3:GetBucketLogging",
      "s3:GetBucketObjectLockConfiguration", "s3:GetBucketOwnershipControls", "s3:GetBucketPolicy",
      "s3:GetBucketPublicAccessBlock", "s3:GetBucketRequestPayment", "s3:GetBucketTagging",
      "s3:GetBucketVersioning", "s3:GetBucketWebsite", "s3:GetEncryptionConfiguration",
      "s3:GetLifecycleConfiguration", "s3:GetReplicationConfiguration", "s3:ListBucket",
    ]
    resources = [var.bucket_arn]
  }

  statement {
    sid       = "TheStateBucket"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.state_bucket}"]
  }

  statement {
    sid = "TheStateAndItsLock"
    # The state and the variables the administrator applied, read and written; the lock file
    # (use_lockfile) created and deleted around each apply.
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:aws:s3:::${var.state_bucket}/*"]
  }
}

resource "aws_iam_role_policy" "deploy" {
  name   = "deploy-${var.name}"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy.json
}
