provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ "opsctl:stack" = var.name }, var.tags)
  }
}
