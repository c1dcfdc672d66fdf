"""What IAM authorises for each API call: its actions, on which resources, with which context.

An API call is authorised as one or more (action, resource) pairs. The action is
`<prefix>:<Operation>` unless the Service Authorization Reference names it otherwise (S3 mostly:
"Actions defined by Amazon S3" and the S3 User Guide's "Required permissions for Amazon S3 API
operations": ListObjectsV2 is s3:ListBucket, HeadObject s3:GetObject, ...). The resources are
built from iam-data's own record of each action (its resource types, which are required, and
each type's ARN format), filled with the call's parameters: every required resource type must be
filled, or the mapping is incomplete and the test says so. A call can also need permissions for
what the service does on the caller's behalf: S3 encrypting with the bucket's KMS key
(kms:GenerateDataKey on a write, kms:Decrypt on a read: S3 User Guide, "Using server-side
encryption with AWS KMS keys", permissions), and a job definition naming a job role (iam:PassRole
to ECS tasks, as Batch's managed AWSBatchFullAccess policy grants it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.conftest import ROOT
from tests.iam.requests import Call

IAM_DATA = ROOT / "tools" / "node_modules" / "@cloud-copilot" / "iam-data" / "data"

# API operations whose IAM action is not named after them (Service Authorization Reference).
ACTION_NAMES = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectVersions"): "s3:ListBucketVersions",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("s3", "GetBucketAccelerateConfiguration"): "s3:GetAccelerateConfiguration",
    ("s3", "GetBucketCors"): "s3:GetBucketCORS",
    ("s3", "GetBucketEncryption"): "s3:GetEncryptionConfiguration",
    ("s3", "PutBucketEncryption"): "s3:PutEncryptionConfiguration",
    ("s3", "GetBucketLifecycle"): "s3:GetLifecycleConfiguration",
    ("s3", "GetBucketLifecycleConfiguration"): "s3:GetLifecycleConfiguration",
    ("s3", "PutBucketLifecycle"): "s3:PutLifecycleConfiguration",
    ("s3", "PutBucketLifecycleConfiguration"): "s3:PutLifecycleConfiguration",
    ("s3", "DeleteBucketLifecycle"): "s3:PutLifecycleConfiguration",
    ("s3", "GetBucketReplication"): "s3:GetReplicationConfiguration",
    ("s3", "GetObjectLockConfiguration"): "s3:GetBucketObjectLockConfiguration",
    ("s3", "GetPublicAccessBlock"): "s3:GetBucketPublicAccessBlock",
    ("s3", "PutPublicAccessBlock"): "s3:PutBucketPublicAccessBlock",
    ("s3", "DeleteBucketPolicy"): "s3:DeleteBucketPolicy",
    ("s3", "ListBuckets"): "s3:ListAllMyBuckets",
}
# Calls IAM does not authorise ("No permissions are required to perform this operation": STS
# API Reference, GetCallerIdentity).
UNAUTHORISED = {("sts", "GetCallerIdentity")}
PREFIX = {"logs": "logs"}


@dataclass(frozen=True)
class Authorization:
    """One (action, resource) pair IAM evaluates, with the request's condition context."""

    action: str
    resource: str
    context: dict[str, str | list[str]] = field(default_factory=dict)
    why: str = ""  # the call it came from, for failure messages

    def key(self) -> tuple[str, str, str]:
        return (self.action, self.resource, json.dumps(self.context, sort_keys=True))


@dataclass(frozen=True)
class World:
    """What a call's authorisation depends on beyond its parameters."""

    account: str
    kms_buckets: dict[str, str]  # bucket name -> ARN of the KMS key its objects are encrypted with


class Unmapped(Exception):
    """A call this module cannot map to IAM authorisations yet: add it from the reference."""


@cache
def _actions(prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((IAM_DATA / "actions" / f"{prefix}.json").read_text())
    return data


@cache
def _arn_formats(prefix: str) -> dict[str, str]:
    data = json.loads((IAM_DATA / "resourceTypes" / f"{prefix}.json").read_text())
    return {name: entry["arn"] for name, entry in data.items()}


def authorizations(call: Call, world: World) -> list[Authorization]:
    """Every (action, resource) the call needs allowed."""
    if (call.service, call.operation) in UNAUTHORISED:
        return []
    prefix = PREFIX.get(call.service, call.service)
    action = ACTION_NAMES.get((call.service, call.operation), f"{prefix}:{call.operation}")
    if call.service == "s3" and call.operation == "DeleteObject" and call.params.get("VersionId"):
        action = "s3:DeleteObjectVersion"
    if call.service == "s3" and call.operation == "GetObject" and call.params.get("VersionId"):
        action = "s3:GetObjectVersion"
    why = f"{call.service}:{call.operation} {json.dumps(call.params, sort_keys=True, default=str)[:300]}"
    found = [
        Authorization(action, resource, _context(call, world), why)
        for variables in _variables(call, world)
        for resource in _resources(action, variables, call)
    ]
    return found + _on_behalf(call, world, why)


def _resources(action: str, variables: dict[str, str], call: Call) -> list[str]:
    """The ARNs of `action`'s resource types that the variables fill: all required ones (an
    unfillable required type is an incomplete mapping), else the optional ones, else "*"."""
    prefix, name = action.split(":", 1)
    entry = _actions(prefix).get(name.lower())
    if entry is None:
        raise Unmapped(f"iam-data knows no action {action} (from {call.service}:{call.operation})")
    formats = _arn_formats(prefix)
    filled: list[str] = []
    for kind in entry["resourceTypes"]:
        arn = _fill(formats.get(kind["name"], ""), variables)
        if arn:
            filled.append(arn)
        elif kind["required"]:
            raise Unmapped(
                f"{action} needs a {kind['name']} resource ({formats.get(kind['name'])}); "
                f"{call.service}:{call.operation} gave only {sorted(variables)}"
            )
    return filled or ["*"]


def _fill(template: str, variables: dict[str, str]) -> str | None:
    names = re.findall(r"\$\{(\w+)\}", template)
    if not template or any(n not in variables for n in names):
        return None
    return re.sub(r"\$\{(\w+)\}", lambda m: variables[m[1]], template)


def _variables(call: Call, world: World) -> list[dict[str, str]]:
    """The ARN variables of the resources a call acts on (one dict per resource it names)."""
    p = call.params
    base = {"Partition": "aws", "Region": call.region, "Account": world.account}
    s = call.service
    if s == "s3":
        if call.operation == "DeleteObjects":
            return [
                {**base, "BucketName": p["Bucket"], "ObjectName": o["Key"]} for o in p["Delete"]["Objects"]
            ]
        found = {**base, "BucketName": p.get("Bucket", "")}
        if p.get("Key"):
            found["ObjectName"] = p["Key"]
        return [found]
    if s == "batch":
        found = dict(base)
        if "jobQueue" in p:
            found["JobQueueName"] = _last(p["jobQueue"])
        definition = p.get("jobDefinition") or p.get("jobDefinitionName")
        if definition and call.operation != "DescribeJobDefinitions":
            name, _, revision = _last(definition).partition(":")
            found["JobDefinitionName"] = name
            if revision:
                found["Revision"] = revision
        if "computeEnvironment" in p or "computeEnvironmentName" in p:
            found["ComputeEnvironmentName"] = _last(
                p.get("computeEnvironment") or p["computeEnvironmentName"]
            )
        if "jobId" in p:
            found["JobId"] = p["jobId"]
        elif call.operation == "SubmitJob":  # the id AWS gave the new job
            if "jobId" not in call.response:
                raise Unmapped(f"{call.operation}: no jobId in the answer, so the job is unknown")
            found["JobId"] = call.response["jobId"]
        if call.operation == "TagResource":
            return [_from_arn(p["resourceArn"], base)]
        return [found]
    if s == "logs":
        if "resourceArn" in p:
            return [_from_arn(p["resourceArn"], base)]
        found = dict(base)
        if "logGroupName" in p:
            found["LogGroupName"] = p["logGroupName"]
        if "logStreamName" in p:
            found["LogStreamName"] = p["logStreamName"]
        return [found]
    if s == "ecr":
        account = {**base, "Account": p.get("registryId", world.account)}
        if "resourceArn" in p:
            return [_from_arn(p["resourceArn"], base)]
        names = p.get("repositoryNames") or ([p["repositoryName"]] if "repositoryName" in p else [])
        return [{**account, "RepositoryName": n} for n in names] or [account]
    if s == "iam":
        found = dict(base)
        for param, variable in (
            ("RoleName", "RoleNameWithPath"),
            ("InstanceProfileName", "InstanceProfileNameWithPath"),
        ):
            if param in p:
                found[variable] = p[param]
        for param in ("PolicyArn", "OpenIDConnectProviderArn"):
            if param in p:
                found.update(_from_arn(p[param], base))
        return [found]
    if s == "kms":
        if "KeyId" in p:
            return [{**base, **_key(p["KeyId"])}]
        return [base]
    if s == "ec2":
        found = dict(base)
        for param, variable in (
            ("VpcId", "VpcId"),
            ("GroupId", "SecurityGroupId"),
            ("LaunchTemplateId", "LaunchTemplateId"),
            ("SubnetId", "SubnetId"),
        ):
            if param in p:
                found[variable] = p[param]
        return [found]
    return [base]


def _last(reference: str) -> str:
    """A name from a name or an ARN ending `.../<name>`."""
    return reference.rsplit("/", 1)[-1]


def _key(key_id: str) -> dict[str, str]:
    return {"KeyId": key_id.rsplit("/", 1)[-1]}


def _from_arn(arn: str, base: dict[str, str]) -> dict[str, str]:
    """ARN variables read back from an ARN the call names."""
    parts = arn.split(":", 5)
    found = {**base, "Region": parts[3] or base["Region"], "Account": parts[4] or base["Account"]}
    rest = parts[5]
    if parts[2] == "logs":
        found["LogGroupName"] = rest.removeprefix("log-group:").removesuffix(":*")
    elif parts[2] == "ecr":
        found["RepositoryName"] = rest.removeprefix("repository/")
    elif parts[2] == "iam":
        kind, _, name = rest.partition("/")
        found[{"policy": "PolicyNameWithPath", "oidc-provider": "OidcProviderName"}.get(kind, kind)] = name
    elif parts[2] == "batch":
        kind, _, name = rest.partition("/")
        if kind == "job-definition":
            found["JobDefinitionName"], _, found["Revision"] = name.partition(":")
        else:
            found[
                {
                    "job-queue": "JobQueueName",
                    "compute-environment": "ComputeEnvironmentName",
                    "job": "JobId",
                }[kind]
            ] = name
    return found


def _context(call: Call, world: World) -> dict[str, str | list[str]]:
    """The condition keys the request carries that the stack's policies test."""
    context: dict[str, str | list[str]] = {
        # boto3 and the Go SDK reach AWS over HTTPS only; the recording's scheme is the test's.
        "aws:SecureTransport": "true",
        "aws:RequestedRegion": call.region,
    }
    p = call.params
    if call.service == "s3" and call.operation in ("ListObjectsV2", "ListObjects", "ListObjectVersions"):
        for param, key in (("Prefix", "s3:prefix"), ("Delimiter", "s3:delimiter")):
            if param in p:
                context[key] = p[param]
    tags = _request_tags(call)
    if tags:
        for k, v in tags.items():
            context[f"aws:RequestTag/{k}"] = v
        context["aws:TagKeys"] = sorted(tags)
    return context


def _request_tags(call: Call) -> dict[str, str]:
    p = call.params
    if call.service in ("batch", "ecr", "logs") and isinstance(p.get("tags"), dict):
        return dict(p["tags"])
    if isinstance(p.get("Tags"), list):
        return {t["Key"]: t["Value"] for t in p["Tags"] if isinstance(t, dict) and "Key" in t}
    return {}


def _on_behalf(call: Call, world: World, why: str) -> list[Authorization]:
    """What the service does with the caller's permissions while serving the call."""
    found = []
    p = call.params
    if call.service == "s3" and p.get("Bucket") in world.kms_buckets and p.get("Key"):
        key = world.kms_buckets[p["Bucket"]]
        context: dict[str, str | list[str]] = {
            "aws:SecureTransport": "true",
            "kms:ViaService": f"s3.{call.region}.amazonaws.com",
            # With S3 Bucket Keys the encryption context is the bucket's ARN.
            "kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{p['Bucket']}",
        }
        if call.operation in ("PutObject", "CopyObject", "CreateMultipartUpload"):
            found.append(Authorization("kms:GenerateDataKey", key, context, f"{why} (SSE-KMS)"))
        if call.operation in ("GetObject", "CopyObject") and call.status < 300:
            found.append(Authorization("kms:Decrypt", key, context, f"{why} (SSE-KMS)"))
    if call.service == "s3" and call.operation in ("GetObject", "HeadObject") and call.status == 404:
        # "If the object you request doesn't exist, the error that Amazon S3 returns depends on
        # whether you also have the s3:ListBucket permission": 404 with it, 403 without (API
        # Reference, GetObject, Permissions). opsctl reads a missing key as NotFound, so it needs
        # the 404, and S3 checks ListBucket on the bucket with no prefix in the request.
        found.append(
            Authorization(
                "s3:ListBucket",
                f"arn:aws:s3:::{p['Bucket']}",
                {"aws:SecureTransport": "true"},
                f"{why} (answered 404, not 403)",
            )
        )
    if call.service == "batch" and call.operation in ("SubmitJob", "RegisterJobDefinition") and p.get("tags"):
        # A job or job definition tagged as it is created needs batch:TagResource on it too
        # (AWS Batch User Guide, "Tag your resources": tagging on creation needs
        # permission for both actions). Its ARN is the one AWS answered with.
        created = call.response.get("jobArn") or call.response.get("jobDefinitionArn")
        if not created:
            raise Unmapped(f"{why}: no ARN in the answer, so the tagged resource is unknown")
        found.append(Authorization("batch:TagResource", created, _context(call, world), f"{why} (tags)"))
    if call.service == "batch" and call.operation == "RegisterJobDefinition":
        role = (p.get("containerProperties") or {}).get("jobRoleArn")
        if role:
            found.append(
                Authorization(
                    "iam:PassRole",
                    role,
                    {"iam:PassedToService": "ecs-tasks.amazonaws.com", "aws:SecureTransport": "true"},
                    f"{why} (jobRoleArn)",
                )
            )
    return found
