"""The container side of opsctl: the same worker runs in AWS Batch and on the local backend."""
