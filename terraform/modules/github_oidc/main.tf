# The role GitHub Actions assumes through OIDC to deploy: no access keys anywhere. Only this
# repository's main branch can assume it (the `sub` claim), and only for sts.amazonaws.com.
#
# It pushes the worker images and runs `opsctl infra apply` (Terraform) to roll the job
# definitions to the new image tag. Applying the stack means managing its resources, so the
# policy allows each service the stack uses on resources named after the stack, plus the
# read-only calls and the few creations that AWS only authorises on "*" (conditioned on the
# stack's tag, in the request when creating, on the resource afterwards).
#
# It cannot raise itself: roles it creates or changes must carry the stack's permissions
# boundary (iam:PermissionsBoundary), it may change only the stack's three roles by name, never
# itself or the boundary (explicit denies), never a role's trust policy, never assume a role,
# and it may pass only the instance and job roles, and only to EC2 and ECS tasks.

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
    sid = "ChangeStackRolesWithinTheBoundary"
    actions = [
      "iam:AttachRolePolicy", "iam:CreateRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy",
      "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy",
    ]
    # The stack's own roles, by name: the deploy role (`<name>-deploy-*`) is not among them.
    resources = [
      "arn:aws:iam::${var.account_id}:role/${var.name}-batch-*",
      "arn:aws:iam::${var.account_id}:role/${var.name}-ecs-instance-*",
      "arn:aws:iam::${var.account_id}:role/${var.name}-job-*",
    ]
    condition {
      test     = "StringEquals"
      variable = "iam:PermissionsBoundary"
      values   = [var.permissions_boundary_arn]
    }
  }

  statement {
    sid = "ReadAndRetireStackRoles"
    actions = [
      "iam:AddRoleToInstanceProfile", "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile", "iam:DeleteRole",
      "iam:GetInstanceProfile", "iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole", "iam:ListRolePolicies", "iam:RemoveRoleFromInstanceProfile", "iam:TagRole",
    ]
    resources = [
      "arn:aws:iam::${var.account_id}:role/${var.name}-batch-*",
      "arn:aws:iam::${var.account_id}:role/${var.name}-ecs-instance-*",
      "arn:aws:iam::${var.account_id}:role/${var.name}-job-*",
      "arn:aws:iam::${var.account_id}:instance-profile/${var.name}-ecs-instance-*",
    ]
  }

  statement {
    sid       = "ReadTheBoundary"
    actions   = ["iam:GetPolicy", "iam:GetPolicyVersion", "iam:ListPolicyVersions"]
    resources = [var.permissions_boundary_arn]
  }

  statement {
    sid     = "PassOnlyWorkerRoles"
    actions = ["iam:PassRole"]
    resources = [
      "arn:aws:iam::${var.account_id}:role/${var.name}-ecs-instance-*",
      "arn:aws:iam::${var.account_id}:role/${var.name}-job-*",
      "arn:aws:iam::${var.account_id}:role/${var.name}-batch-*",
    ]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["batch.amazonaws.com", "ec2.amazonaws.com", "ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid    = "NeverItselfNorTheBoundary"
    effect = "Deny"
    actions = [
      "iam:AttachRolePolicy", "iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
      "iam:DeleteRole", "iam:DeleteRolePermissionsBoundary", "iam:DeleteRolePolicy", "iam:DetachRolePolicy",
      "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy", "iam:SetDefaultPolicyVersion", "iam:TagRole",
      "iam:UntagRole", "iam:UpdateAssumeRolePolicy", "iam:UpdateRole",
    ]
    resources = ["arn:aws:iam::${var.account_id}:role/${var.name}-deploy-*", var.permissions_boundary_arn]
  }

  statement {
    sid    = "NoBoundaryRemovalNoTrustChangesNoAssuming"
    effect = "Deny"
    # A role's boundary stays; a trust policy naming the deploy role would let it assume what
    # it created, so trust policies are set at creation only, and the deploy role assumes nothing.
    actions   = ["iam:DeleteRolePermissionsBoundary", "iam:UpdateAssumeRolePolicy", "sts:AssumeRole"]
    resources = ["*"]
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
    sid     = "CreateTaggedLaunchTemplatesAndSecurityGroups"
    actions = ["ec2:CreateLaunchTemplate", "ec2:CreateSecurityGroup"]
    resources = [
      "arn:aws:ec2:${var.region}:${var.account_id}:launch-template/*",
      "arn:aws:ec2:${var.region}:${var.account_id}:security-group/*",
      "arn:aws:ec2:${var.region}:${var.account_id}:vpc/*",
    ]
    # At creation the tag is in the request; aws:ResourceTag matches only existing resources.
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/opsctl:stack"
      values   = [var.name]
    }
  }

  statement {
    sid       = "TagOnlyWhileCreating"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:aws:ec2:${var.region}:${var.account_id}:launch-template/*", "arn:aws:ec2:${var.region}:${var.account_id}:security-group/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateLaunchTemplate", "CreateSecurityGroup"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/opsctl:stack"
      values   = [var.name]
    }
  }

  statement {
    sid = "ManageTaggedLaunchTemplatesAndSecurityGroups"
    actions = [
      "ec2:AuthorizeSecurityGroupEgress", "ec2:CreateLaunchTemplateVersion", "ec2:DeleteLaunchTemplate",
      "ec2:DeleteSecurityGroup", "ec2:RevokeSecurityGroupEgress",
    ]
    resources = [
      "arn:aws:ec2:${var.region}:${var.account_id}:launch-template/*",
      "arn:aws:ec2:${var.region}:${var.account_id}:security-group/*",
    ]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/opsctl:stack"
      values   = [var.name]
    }
  }

  statement {
    sid       = "CreateTaggedKeys"
    actions   = ["kms:CreateKey", "kms:TagResource"]
    resources = ["*"] # CreateKey authorises on "*" only; the request's tag is the scope
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/opsctl:stack"
      values   = [var.name]
    }
  }

  statement {
    sid = "ManageTaggedKeys"
    actions = [
      "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:EnableKeyRotation", "kms:GenerateDataKey",
      "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags", "kms:PutKeyPolicy",
      "kms:ScheduleKeyDeletion",
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
