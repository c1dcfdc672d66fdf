"""The GitHub deploy role cannot raise itself: its policy, evaluated as IAM evaluates it.

The policy documents are read from terraform/ (python-hcl2) and evaluated by a small model of
IAM's rules for identity policies (User Guide, "Policy evaluation logic"): a request is allowed
when an Allow statement matches its action, resource and every condition, and no Deny does;
wildcards `*` and `?` in actions and ARNs; StringEquals / StringLike; a condition on a key the
request does not carry does not match. Each escalation path a compromised workflow step could
try is a request here.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import hcl2
import pytest

from tests.conftest import ROOT

OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
ACCOUNT, NAME, REGION = "123456789012", "opsctl", "us-east-1"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/{NAME}-role-boundary"
DEPLOY = f"arn:aws:iam::{ACCOUNT}:role/{NAME}-deploy-20261128120000000000000001"
JOB = f"arn:aws:iam::{ACCOUNT}:role/{NAME}-job-20261128120000000000000002"
INSTANCE = f"arn:aws:iam::{ACCOUNT}:role/{NAME}-ecs-instance-20261128120000000000000003"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
VALUES = {
    "${var.account_id}": ACCOUNT,
    "${var.name}": NAME,
    "${var.region}": REGION,
    "${var.permissions_boundary_arn}": BOUNDARY,
    "${var.state_bucket}": "tf-state",
    "${var.bucket_arn}": f"arn:aws:s3:::{NAME}-runs-x",
    "${var.bucket_key_arn}": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k",
    "${local.issuer}": "token.actions.githubusercontent.com",
}


def documents(module: str) -> dict[str, list[dict[str, Any]]]:
    parsed = hcl2.loads(
        (ROOT / "terraform" / "modules" / module / "main.tf").read_text(), serialization_options=OPTIONS
    )
    return {
        name: body["statement"]
        for entry in parsed["data"]
        for kind, named in entry.items()
        if kind == "aws_iam_policy_document"
        for name, body in named.items()
    }


def resolve(text: str) -> str:
    for key, value in VALUES.items():
        text = text.replace(key, value)
    assert "${" not in text, f"unresolved in {text}"
    return text


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]

    def matches(self, action: str, resource: str, context: dict[str, str]) -> bool:
        return (
            any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in self.actions)
            and any(fnmatch.fnmatchcase(resource, r) for r in self.resources)
            and all(_holds(test, context.get(key), values) for test, key, values in self.conditions)
        )


def _holds(test: str, value: str | None, values: tuple[str, ...]) -> bool:
    if value is None:
        return False
    if test == "StringEquals":
        return value in values
    if test in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(value, v) for v in values)
    raise AssertionError(f"the model does not know the condition operator {test}")


def statements(raw: list[dict[str, Any]]) -> list[Statement]:
    return [
        Statement(
            sid=s.get("sid", ""),
            effect=s.get("effect", "Allow"),
            actions=tuple(s["actions"]),
            resources=tuple(resolve(r) for r in s["resources"]),
            conditions=tuple(
                (c["test"], resolve(c["variable"]), tuple(resolve(v) for v in c["values"]))
                for c in s.get("condition", [])
            ),
        )
        for s in raw
    ]


DEPLOY_POLICY = statements(documents("github_oidc")["deploy"])


def decision(action: str, resource: str, **context: str) -> str:
    """ "Allow", "Deny" (an explicit deny matched) or "ImplicitDeny"."""
    ctx = {key.replace("__", ":").replace("_slash_", "/"): value for key, value in context.items()}
    matched = [s for s in DEPLOY_POLICY if s.matches(action, resource, ctx)]
    if any(s.effect == "Deny" for s in matched):
        return "Deny"
    return "Allow" if matched else "ImplicitDeny"


WITH_BOUNDARY = {"iam__PermissionsBoundary": BOUNDARY}


@pytest.mark.parametrize(
    "action",
    [
        "iam:AttachRolePolicy",
        "iam:PutRolePolicy",
        "iam:UpdateAssumeRolePolicy",
        "iam:DeleteRolePermissionsBoundary",
        "iam:PutRolePermissionsBoundary",
        "iam:DetachRolePolicy",
        "iam:DeleteRolePolicy",
    ],
)
def test_it_cannot_change_itself_even_with_the_boundary(action: str) -> None:
    assert decision(action, DEPLOY, **WITH_BOUNDARY, iam__PolicyARN=ADMIN) == "Deny"


@pytest.mark.parametrize(
    "action",
    ["iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion"],
)
def test_it_cannot_change_the_boundary(action: str) -> None:
    assert decision(action, BOUNDARY) == "Deny"


def test_roles_it_creates_or_changes_must_carry_the_boundary() -> None:
    new_job = f"arn:aws:iam::{ACCOUNT}:role/{NAME}-job-next"
    for action in ("iam:CreateRole", "iam:AttachRolePolicy", "iam:PutRolePolicy"):
        assert decision(action, new_job, **WITH_BOUNDARY, iam__PolicyARN=ADMIN) == "Allow"
        assert decision(action, new_job, iam__PolicyARN=ADMIN) == "ImplicitDeny", "without the boundary"
        other = f"arn:aws:iam::{ACCOUNT}:policy/some-other-boundary"
        assert decision(action, new_job, iam__PermissionsBoundary=other) == "ImplicitDeny"
    outside = f"arn:aws:iam::{ACCOUNT}:role/{NAME}-admin"  # not one of the stack's roles
    assert decision("iam:CreateRole", outside, **WITH_BOUNDARY) == "ImplicitDeny"


def test_no_trust_changes_and_no_assuming_so_a_created_role_cannot_be_its_way_up() -> None:
    assert decision("iam:UpdateAssumeRolePolicy", JOB) == "Deny"
    assert decision("sts:AssumeRole", JOB) == "Deny"
    assert decision("iam:DeleteRolePermissionsBoundary", JOB) == "Deny"


def test_it_passes_only_the_worker_roles_and_only_to_batch_ec2_and_ecs() -> None:
    assert decision("iam:PassRole", JOB, iam__PassedToService="ecs-tasks.amazonaws.com") == "Allow"
    assert decision("iam:PassRole", INSTANCE, iam__PassedToService="ec2.amazonaws.com") == "Allow"
    assert decision("iam:PassRole", JOB, iam__PassedToService="lambda.amazonaws.com") == "ImplicitDeny"
    assert decision("iam:PassRole", JOB) == "ImplicitDeny"
    assert decision("iam:PassRole", DEPLOY, iam__PassedToService="ec2.amazonaws.com") == "ImplicitDeny"
    other = f"arn:aws:iam::{ACCOUNT}:role/OrganizationAccountAccessRole"
    assert decision("iam:PassRole", other, iam__PassedToService="ec2.amazonaws.com") == "ImplicitDeny"


@pytest.mark.parametrize(
    "action",
    [
        "iam:CreateUser",
        "iam:CreateAccessKey",
        "iam:CreateLoginProfile",
        "iam:AttachUserPolicy",
        "iam:PutUserPolicy",
        "iam:AddUserToGroup",
        "iam:AttachGroupPolicy",
        "iam:CreatePolicy",
        "lambda:CreateFunction",
        "ec2:RunInstances",
        "batch:SubmitJob",
    ],
)
def test_other_ways_up_are_closed(action: str) -> None:
    for resource in ("*", DEPLOY, f"arn:aws:iam::{ACCOUNT}:user/{NAME}-x", f"arn:aws:iam::{ACCOUNT}:group/x"):
        assert decision(action, resource, **WITH_BOUNDARY) != "Allow", (action, resource)


def test_creations_are_scoped_by_the_request_tag() -> None:
    template = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0123"
    tagged = {"aws__RequestTag_slash_opsctl:stack": NAME}
    assert decision("ec2:CreateLaunchTemplate", template, **tagged) == "Allow"
    assert (
        decision("ec2:CreateLaunchTemplate", template, **{"aws__ResourceTag_slash_opsctl:stack": NAME})
        == "ImplicitDeny"
    )
    assert decision("ec2:CreateLaunchTemplate", template) == "ImplicitDeny"
    assert decision("kms:CreateKey", "*", **tagged) == "Allow"
    assert (
        decision("kms:CreateKey", "*", **{"aws__RequestTag_slash_opsctl:stack": "someone-else"})
        == "ImplicitDeny"
    )
    creations = {"ec2:CreateLaunchTemplate", "ec2:CreateSecurityGroup", "kms:CreateKey"}
    for statement in DEPLOY_POLICY:  # no creation waits for a tag its resource does not have yet
        keys = [key for _, key, _ in statement.conditions]
        if creations & set(statement.actions):
            assert not any(k.startswith("aws:ResourceTag/") for k in keys), statement.sid


def test_every_role_of_the_stack_carries_the_boundary_and_the_boundary_grants_no_iam_writes() -> None:
    parsed = hcl2.loads(
        (ROOT / "terraform" / "modules" / "iam" / "main.tf").read_text(), serialization_options=OPTIONS
    )
    roles = {
        name: body
        for entry in parsed["resource"]
        for kind, named in entry.items()
        if kind == "aws_iam_role"
        for name, body in named.items()
    }
    assert set(roles) == {"batch_service", "instance", "job"}
    for name, body in roles.items():
        assert body.get("permissions_boundary") == "${aws_iam_policy.boundary.arn}", name
    boundary = statements(documents("iam")["boundary"])
    iam_actions = {a for s in boundary for a in s.actions if a.startswith("iam:")}
    assert iam_actions == {
        "iam:GetInstanceProfile",
        "iam:GetRole",
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
    }
    [pass_role] = [s for s in boundary if "iam:PassRole" in s.actions]
    assert pass_role.conditions, "a role may pass roles only to the services that need them"
