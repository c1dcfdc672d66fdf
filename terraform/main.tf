# opsctl's AWS side: the run bucket, the image repositories, IAM, and AWS Batch (CPU spot and GPU
# compute environments, queues, job definitions). `opsctl infra apply` runs it and writes the
# outputs to .opsctl/infra.json, which the AWS backend reads.

data "aws_caller_identity" "current" {}

module "network" {
  source     = "./modules/network"
  name       = var.name
  vpc_id     = var.vpc_id
  subnet_ids = var.subnet_ids
}

module "storage" {
  source               = "./modules/storage"
  name                 = var.name
  runs_expiration_days = var.runs_expiration_days
}

module "ecr" {
  source      = "./modules/ecr"
  name        = var.name
  images      = ["cpu", "gpu"]
  keep_images = var.ecr_keep_images
}

module "iam" {
  source         = "./modules/iam"
  name           = var.name
  bucket_arn     = module.storage.bucket_arn
  bucket_key_arn = module.storage.kms_key_arn
  log_group_arn  = module.batch.log_group_arn
  region         = var.region
  account_id     = data.aws_caller_identity.current.account_id
}

module "batch" {
  source                      = "./modules/batch"
  name                        = var.name
  region                      = var.region
  account_id                  = data.aws_caller_identity.current.account_id
  subnet_ids                  = module.network.subnet_ids
  security_group_id           = module.network.security_group_id
  service_role_arn            = module.iam.batch_service_role_arn
  service_role_attachment     = module.iam.batch_service_role_attachment_id
  instance_profile_arn        = module.iam.instance_profile_arn
  job_role_arn                = module.iam.job_role_arn
  cpu_image                   = "${module.ecr.repository_urls["cpu"]}:${var.image_tag}"
  gpu_image                   = "${module.ecr.repository_urls["gpu"]}:${var.image_tag}"
  cpu_instance_types          = var.cpu_instance_types
  cpu_max_vcpus               = var.cpu_max_vcpus
  gpu_instance_types          = var.gpu_instance_types
  gpu_max_vcpus               = var.gpu_max_vcpus
  use_custom_gpu_ami          = var.use_custom_gpu_ami
  job_timeout_seconds         = var.job_timeout_seconds
  runnable_time_limit_seconds = var.runnable_time_limit_seconds
  log_retention_days          = var.log_retention_days
  # moto keeps no job state time limits: applied again, it would show them as missing.
  job_state_time_limits = !var.emulator
}

module "github_oidc" {
  source                   = "./modules/github_oidc"
  count                    = var.github_repository == null ? 0 : 1
  name                     = var.name
  github_repository        = var.github_repository
  create_oidc_provider     = var.create_github_oidc_provider
  state_bucket             = var.terraform_state_bucket
  region                   = var.region
  permissions_boundary_arn = module.iam.boundary_arn
  account_id               = data.aws_caller_identity.current.account_id
  repository_arns          = values(module.ecr.repository_arns)
  job_role_arn             = module.iam.job_role_arn
  bucket_arn               = module.storage.bucket_arn
  kms_key_arns             = [module.storage.kms_key_arn, module.ecr.kms_key_arn, module.batch.log_kms_key_arn]
  log_group_arn            = module.batch.log_group_arn
  reads_gpu_ami            = var.use_custom_gpu_ami
}
