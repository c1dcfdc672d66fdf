variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "vpc_id" {
  description = "VPC to use; null selects the account's default VPC."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets to use; empty selects every subnet of the VPC."
  type        = list(string)
  default     = []
}
