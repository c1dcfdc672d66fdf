# The role GitHub Actions assumes through OIDC to deploy: no access keys anywhere. Only this
# repository's main branch can assume it (the `sub` claim), and only for sts.amazonaws.com.
#
# It pushes the worker images and runs `opsctl infra apply` (Terraform) to roll the job
# definitions to the new image tag. Applying the stack means managing its resources, so the
# policy allows each service the stack uses on resources named after the stack, plus the
# read-only calls and the few creations that AWS only authorises on "*" (conditioned on the
# stack's tag where the service supports it).

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
    sid = "EcrPushAndManageRepositories"
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
      "ecr:CreateRepository", "ecr:DeleteLifecyclePolicy", "ecr:DeleteRepository",
      "ecr:DescribeImages", "ecr:DescribeRepositories", "ecr:GetDownloadUrlForLayer",
      "ecr:GetLifecyclePolicy", "ecr:InitiateLayerUpload", "ecr:ListTagsForResource",
      "ecr:PutImage", "ecr:PutImageScanningConfiguration", "ecr:PutImageTagMutability",
      "ecr:PutLifecyclePolicy", "ecr:TagResource", "ecr:UploadLayerPart",
    ]
    resources = ["arn:aws:ecr:${var.region}:${var.account_id}:repository/${var.name}/*"]
  }

  statement {
    sid       = "EcrRegistryScanning"
    actions   = ["ecr:GetRegistryScanningConfiguration", "ecr:PutRegistryScanningConfiguration"]
    resources = ["arn:aws:ecr:${var.region}:${var.account_id}:registry/${var.account_id}"]
  }

  statement {
    sid = "BatchStack"
    actions = [
      "batch:CreateComputeEnvironment", "batch:CreateJobQueue", "batch:DeleteComputeEnvironment",
      "batch:DeleteJobQueue", "batch:DeregisterJobDefinition", "batch:RegisterJobDefinition",
      "batch:TagResource", "batch:UntagResource", "batch:UpdateComputeEnvironment", "batch:UpdateJobQueue",
    ]
    resources = [
      "arn:aws:batch:${var.region}:${var.account_id}:compute-environment/${var.name}-*",
      "arn:aws:batch:${var.region}:${var.account_id}:job-queue/${var.name}-*",
      "arn:aws:batch:${var.region}:${var.account_id}:job-definition/${var.name}-*",
    ]
  }

  statement {
    sid       = "ReadOnlyDescribes"
    actions   = ["batch:DescribeComputeEnvironments", "batch:DescribeJobDefinitions", "batch:DescribeJobQueues", "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeLaunchTemplates", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs", "kms:ListAliases"]
    resources = ["*"] # describe/list calls that AWS authorises on "*" only
  }

  statement {
    sid       = "OidcProviderRead"
    actions   = ["iam:GetOpenIDConnectProvider"]
    resources = ["arn:aws:iam::${var.account_id}:oidc-provider/${local.issuer}"]
  }

  statement {
    sid       = "LogGroupsRead"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["arn:aws:logs:${var.region}:${var.account_id}:log-group:*"]
  }

  statement {
    sid = "IamStackRoles"
    actions = [
      "iam:AddRoleToInstanceProfile", "iam:AttachRolePolicy", "iam:CreateInstanceProfile", "iam:CreateRole",
      "iam:DeleteInstanceProfile", "iam:DeleteRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy",
      "iam:GetInstanceProfile", "iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole", "iam:ListRolePolicies", "iam:PassRole", "iam:PutRolePolicy",
      "iam:RemoveRoleFromInstanceProfile", "iam:TagRole", "iam:UpdateAssumeRolePolicy",
    ]
    resources = [
      "arn:aws:iam::${var.account_id}:role/${var.name}-*",
      "arn:aws:iam::${var.account_id}:instance-profile/${var.name}-*",
    ]
  }

  statement {
    sid = "RunBucketAndState"
    actions = [
      "s3:CreateBucket", "s3:DeleteBucketPolicy", "s3:GetBucket*", "s3:GetEncryptionConfiguration",
      "s3:GetLifecycleConfiguration", "s3:GetObject", "s3:ListBucket", "s3:PutBucket*",
      "s3:PutEncryptionConfiguration", "s3:PutLifecycleConfiguration", "s3:PutObject", "s3:DeleteObject",
    ]
    resources = [
      "arn:aws:s3:::${var.name}-runs-*",
      "arn:aws:s3:::${var.state_bucket}",
      "arn:aws:s3:::${var.state_bucket}/*",
    ]
  }

  statement {
    sid = "LogGroup"
    actions = [
      "logs:AssociateKmsKey", "logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:ListTagsForResource",
      "logs:ListTagsLogGroup", "logs:PutRetentionPolicy", "logs:TagResource",
    ]
    resources = ["arn:aws:logs:${var.region}:${var.account_id}:log-group:/aws/batch/${var.name}*"]
  }

  statement {
    sid = "LaunchTemplatesAndSecurityGroup"
    actions = [
      "ec2:AuthorizeSecurityGroupEgress", "ec2:CreateLaunchTemplate", "ec2:CreateLaunchTemplateVersion",
      "ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:DeleteLaunchTemplate", "ec2:DeleteSecurityGroup",
      "ec2:RevokeSecurityGroupEgress",
    ]
    resources = [
      "arn:aws:ec2:${var.region}:${var.account_id}:launch-template/*",
      "arn:aws:ec2:${var.region}:${var.account_id}:security-group/*",
      "arn:aws:ec2:${var.region}:${var.account_id}:vpc/*",
    ]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/opsctl:stack"
      values   = [var.name]
    }
  }

  statement {
    sid = "StackKeys"
    actions = [
      "kms:CreateKey", "kms:DescribeKey", "kms:EnableKeyRotation", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
      "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:TagResource", "kms:CreateGrant",
      "kms:Decrypt", "kms:GenerateDataKey",
    ]
    resources = ["arn:aws:kms:${var.region}:${var.account_id}:key/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/opsctl:stack"
      values   = [var.name]
    }
  }
}

resource "aws_iam_role_policy" "deploy" {
  name   = "deploy-${var.name}"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy.json
}
