# The run bucket: every run's manifest, list files and markers live under runs/<run_id>/.
# Private, encrypted with its own key, versioned, TLS only.

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "bucket" {
  description             = "${var.name} run bucket"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      # The account administers the key; IAM policies (the job role's) grant its use.
      Sid       = "AccountAdministers"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

resource "aws_s3_bucket" "runs" {
  # checkov:skip=CKV_AWS_18:Access logging needs a second bucket per stack; CloudTrail data events cover audits where required.
  # checkov:skip=CKV_AWS_144:Cross-region replication doubles cost for scratch data that runs re-create.
  # checkov:skip=CKV2_AWS_62:No consumer for event notifications: opsctl polls markers.
  bucket_prefix = "${var.name}-runs-"
}

resource "aws_s3_bucket_ownership_controls" "runs" {
  bucket = aws_s3_bucket.runs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "runs" {
  bucket                  = aws_s3_bucket.runs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "runs" {
  bucket = aws_s3_bucket.runs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "runs" {
  bucket = aws_s3_bucket.runs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.bucket.arn
    }
    bucket_key_enabled = true # one KMS call per object burst, not per marker
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "runs" {
  bucket = aws_s3_bucket.runs.id

  rule {
    id     = "expire-run-scratch"
    status = "Enabled"
    filter {
      prefix = "runs/"
    }
    expiration {
      days = var.runs_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }

  # Each ledger update deletes the previous ledger object (the job role may delete nothing
  # else), which in a versioned bucket leaves a delete marker; once its noncurrent version has
  # expired (7 days), the marker is removed too, so LIST requests never wade through them.
  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"
    filter {
      prefix = "runs/"
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.runs]
}

# TLS only: deny every request that does not arrive over HTTPS.
resource "aws_s3_bucket_policy" "runs" {
  bucket = aws_s3_bucket.runs.id
  policy = data.aws_iam_policy_document.tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.runs]
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.runs.arn,
      "${aws_s3_bucket.runs.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}
