"""Where a run executes: `local` (this machine, the default) or `aws` (AWS Batch)."""

from enum import StrEnum


class BackendName(StrEnum):
    LOCAL = "local"
    AWS = "aws"
