variable "name" {
  description = "Prefix of repository names."
  type        = string
}

variable "images" {
  description = "One repository per worker image."
  type        = list(string)
}

variable "keep_images" {
  description = "Images kept per repository; older ones expire."
  type        = number
}

variable "registry_scanning" {
  description = "Manage the registry-wide scan-on-push rule. False only for an emulator that lacks the API (moto)."
  type        = bool
  default     = true
}
