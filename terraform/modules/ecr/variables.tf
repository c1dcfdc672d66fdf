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
