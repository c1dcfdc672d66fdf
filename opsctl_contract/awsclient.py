"""boto3 clients as opsctl makes them, and what an AWS failure means to a user.

Both AWS adapters (storage.S3Store for S3, backends.batch.BatchAPI for Batch and CloudWatch
Logs) make their clients with `client` and pass every call through `aws_call`, so that no
botocore exception reaches the CLI as a traceback. The split follows the exit codes of
docs/cli.md:

- exit 2 (`BadInput`): what a user fixes in their configuration and that fails the same way
  every time: no credentials, an unknown region, a queue, job definition, bucket or log group
  that does not exist, access denied (AWS names the missing permission in its message);
- exit 1 (`AwsUnavailable`): the service could not be reached or kept failing after botocore's
  retries (10 attempts, adaptive): the same command may work later.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, overload

from opsctl_contract.errors import BadInput, OpsctlError

if TYPE_CHECKING:  # the boto3-stubs packages, for mypy only: the images do not install them
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_pricing import PricingClient
    from mypy_boto3_s3 import S3Client

# Error codes that mean "these credentials may not do this", across S3, Batch, Logs and STS.
DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
    }
)
THROTTLED = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException", "SlowDown"})


class AwsUnavailable(OpsctlError):
    """An AWS service could not be reached, or kept failing after retries (exit 1)."""


@overload
def client(service: Literal["batch"], region: str | None = None) -> BatchClient: ...
@overload
def client(service: Literal["ec2"], region: str | None = None) -> EC2Client: ...
@overload
def client(service: Literal["ecr"], region: str | None = None) -> ECRClient: ...
@overload
def client(service: Literal["logs"], region: str | None = None) -> CloudWatchLogsClient: ...
@overload
def client(service: Literal["pricing"], region: str | None = None) -> PricingClient: ...
@overload
def client(service: Literal["s3"], region: str | None = None) -> S3Client: ...


def client(service: str, region: str | None = None) -> Any:
    """A boto3 client, typed by service (the boto3-stubs packages), with adaptive retries: 10
    attempts, or AWS_MAX_ATTEMPTS when set.

    It honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> (how tests reach their servers).
    """
    import boto3
    from botocore.config import Config

    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 10)
    config = Config(region_name=region, retries={"mode": "adaptive", "max_attempts": attempts})
    shown = {"s3": "S3", "batch": "AWS Batch", "logs": "CloudWatch Logs"}.get(service, service)
    make: Any = boto3.client  # `service` is any name here; the overloads give callers its type
    with aws_call(shown, "a client", region):
        return make(service, config=config)


def error_code(error: BaseException) -> str:
    response: dict[str, Any] = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _message(error: BaseException) -> str:
    response: dict[str, Any] = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(error)


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region botocore knows, in every partition (aws, aws-cn, aws-us-gov, ...)."""
    import boto3

    session = boto3.session.Session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("s3", partition_name=partition)
    )


def translate(error: BaseException, service: str, what: str, region: str | None = None) -> OpsctlError | None:
    """Our error for a botocore failure of `service` acting on `what`; None if it is not one.

    `what` names the resource (a bucket and key, a queue, a job id) so the line says which
    value of the user's configuration is wrong.
    """
    from botocore import exceptions as boto

    if isinstance(
        error,
        boto.NoCredentialsError
        | boto.PartialCredentialsError
        | boto.CredentialRetrievalError
        | boto.ProfileNotFound
        | boto.TokenRetrievalError
        | boto.SSOError,
    ):
        return BadInput(
            f"no usable AWS credentials ({error}): run `aws configure` or `aws sso login`, "
            "or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
        )
    if isinstance(error, boto.NoRegionError | boto.InvalidRegionError):
        return BadInput(f"AWS region: {error}")
    if isinstance(error, boto.ParamValidationError):
        return BadInput(f"{service}: invalid value for {what}: {' '.join(str(error).split())}")
    if isinstance(error, boto.EndpointConnectionError | boto.ConnectionError | boto.HTTPClientError):
        if region and region not in known_regions():
            return BadInput(f"region '{region}' is not an AWS region (cannot reach {service} there: {error})")
        endpoint = getattr(error, "kwargs", {}).get("endpoint_url", "")
        return AwsUnavailable(f"cannot reach {service}{' at ' + endpoint if endpoint else ''}: {error}")
    if isinstance(error, boto.ClientError):
        code = error_code(error)
        status = int((error.response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in DENIED or status == 403:
            return BadInput(f"{service}: access denied to {what} ({code or status}: {_message(error)})")
        if code in THROTTLED or status >= 500:
            return AwsUnavailable(
                f"{service} kept failing on {what} after retries ({code or status}: {_message(error)})"
            )
        return BadInput(f"{service} refused {what} ({code or status}: {_message(error)})")
    if isinstance(error, boto.BotoCoreError):
        return AwsUnavailable(f"{service}: {what}: {error}")
    return None


@contextlib.contextmanager
def aws_call(service: str, what: str, region: str | None = None) -> Iterator[None]:
    """Run boto3 calls, turning each failure into `BadInput` or `AwsUnavailable`, one line."""
    try:
        yield
    except Exception as e:
        ours = translate(e, service, what, region)
        if ours is None:
            raise
        raise ours from None
