provider "aws" {
  region = var.region

  default_tags {
    # moto copies a launch template's own tags into its launch data, so every later plan would
    # want to remove them again: an emulator gets no default tags (var.emulator, tests only).
    tags = var.emulator ? {} : merge({ "opsctl:stack" = var.name }, var.tags)
  }
}
