"""opsctl: run scientific batch pipelines on AWS Batch, or on one machine with no cloud."""

__version__ = "0.1.0"
