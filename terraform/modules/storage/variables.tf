variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "runs_expiration_days" {
  description = "Days after which objects under runs/ expire."
  type        = number
}
