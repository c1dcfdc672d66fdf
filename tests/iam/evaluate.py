"""Authorisations evaluated by a real IAM evaluator: @cloud-copilot/iam-simulate, through
tools/iam_simulate.mjs on the machine's Node.js.

A principal is what IAM evaluates a request with: its identity policies, its permissions
boundary, and the resource's own policy where it has one (the bucket policy for S3, the key
policy for KMS). Same-account requests, as every request of the stack is: either the identity or
the resource policy may allow, any explicit deny wins, and a boundary caps the identity side.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.iam.actions import Authorization

SIMULATE = ROOT / "tools" / "iam_simulate.mjs"
LIBRARY = ROOT / "tools" / "node_modules" / "@cloud-copilot" / "iam-simulate"
Document = dict[str, Any]


@dataclass(frozen=True)
class Principal:
    """Who makes the requests, as IAM sees them."""

    name: str  # for messages: "the job role"
    arn: str  # the session's principal ARN
    account: str
    identity: dict[str, Document]  # policy name -> document
    boundary: Document | None = None
    resource_policies: dict[str, Document] = field(default_factory=dict)  # ARN prefix -> document
    boundary_arn: str | None = None


def _resource_policy(principal: Principal, resource: str) -> Document | None:
    for prefix, document in principal.resource_policies.items():
        if resource == prefix or resource.startswith(prefix + "/"):
            return document
    return None


def _simulation(principal: Principal, auth: Authorization, identity: dict[str, Document]) -> dict[str, Any]:
    simulation: dict[str, Any] = {
        "request": {
            "principal": principal.arn,
            "action": auth.action,
            "resource": {"resource": auth.resource, "accountId": principal.account},
            "contextVariables": {
                "aws:PrincipalArn": principal.arn,
                "aws:PrincipalAccount": principal.account,
                **auth.context,
            },
        },
        "identityPolicies": [{"name": n, "policy": d} for n, d in identity.items()],
        "serviceControlPolicies": [],
        "resourceControlPolicies": [],
    }
    if principal.boundary is not None:
        simulation["permissionBoundaryPolicies"] = [{"name": "boundary", "policy": principal.boundary}]
    policy = _resource_policy(principal, auth.resource)
    if policy is not None:
        simulation["resourcePolicy"] = policy
    return simulation


def simulate(simulations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluator's answer for each simulation, in order."""
    node = shutil.which("node")
    if node is None or not LIBRARY.is_dir():
        pytest.fail("the permission tests need Node.js and tools/node_modules (`make static` installs them)")
    if not simulations:
        return []
    out = subprocess.run(
        [node, str(SIMULATE)], input=json.dumps(simulations), capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(out.stdout)
    return results


def decisions(principal: Principal, auths: list[Authorization]) -> dict[tuple[str, str, str], str]:
    """Each distinct authorisation's result: "Allowed", "ExplicitlyDenied", "ImplicitlyDenied",
    or "invalid: ..." when the evaluator refuses the request as malformed."""
    unique = {a.key(): a for a in auths}
    results = simulate([_simulation(principal, a, principal.identity) for a in unique.values()])
    return {
        key: r.get("result") or f"invalid: {json.dumps(r.get('errors'))[:400]}"
        for key, r in zip(unique, results, strict=True)
    }


def unused_grants(principal: Principal, auths: list[Authorization]) -> list[str]:
    """Each Allow statement's actions that no recorded request needs: an action is used when some
    recorded authorisation is allowed by the statement cut down to that action alone (the same
    evaluator decides, without the boundary, which grants nothing; with the resource policies,
    since KMS allows nothing its key policy does not delegate)."""
    unique = list({a.key(): a for a in auths}.values())
    probes: list[tuple[str, dict[str, Any]]] = []
    for name, document in principal.identity.items():
        for n, statement in enumerate(_statements(document)):
            if statement.get("Effect") != "Allow":
                continue
            for action in _listed(statement.get("Action", [])):
                label = f"{name} {statement.get('Sid') or f'statement {n}'}: {action}"
                alone = {"Version": "2012-10-17", "Statement": [{**statement, "Action": [action]}]}
                bare = Principal(
                    principal.name,
                    principal.arn,
                    principal.account,
                    {"probe": alone},
                    None,
                    principal.resource_policies,
                )
                probes.extend(
                    (label, _simulation(bare, a, bare.identity))
                    for a in unique
                    if _could_match(action, a.action)
                )
                if not any(_could_match(action, a.action) for a in unique):
                    probes.append((label, {}))
    results = simulate([s for _, s in probes if s])
    used: dict[str, bool] = {}
    answers = iter(results)
    for label, simulation in probes:
        allowed = bool(simulation) and next(answers).get("result") == "Allowed"
        used[label] = used.get(label, False) or allowed
    return [label for label, ok in used.items() if not ok]


def _statements(document: Document) -> list[dict[str, Any]]:
    statements = document.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _could_match(pattern: str, action: str) -> bool:
    """Cheap filter before asking the evaluator: same service, and the name's wildcard fits."""
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())
