"""Recorded AWS requests, read back as API calls: who signed each one, and what it asked.

Requests are recorded where they arrive: by the moto server (tests/moto_serial.py `--record`,
raw HTTP, whoever sent it: opsctl, its workers, or Terraform's Go provider) and by the harness's
own servers (the Batch player, the Price List), which already know the operation they answer.
Each recorded HTTP request is parsed here with botocore's service models, not with moto's
reading of it: the signing service and region come from the SigV4 credential scope, the
operation from the protocol (the `X-Amz-Target` header for JSON services, the `Action` field
for query services, the method, path and query for REST services), and the parameters from
the operation's input shape, by each member's `location`.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# SigV4: "AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, ..."
CREDENTIAL = re.compile(r"Credential=([^/]+)/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
# The signing names the stack's clients use, and botocore's name of each service.
SERVICES = {
    "s3": "s3",
    "batch": "batch",
    "logs": "logs",
    "ecr": "ecr",
    "iam": "iam",
    "sts": "sts",
    "ec2": "ec2",
    "kms": "kms",
    "pricing": "pricing",
    "ecs": "ecs",
    "ssm": "ssm",
}


@dataclass(frozen=True)
class Call:
    """One AWS API call as IAM sees it: the signer's access key, the service and operation,
    the parameters by the API's member names, the region it was signed for and the answer."""

    key: str
    service: str
    operation: str
    params: dict[str, Any]
    region: str
    status: int
    response: dict[str, Any]  # the answer's JSON, where the service answers JSON


class Unparsed(Exception):
    """A recorded request no operation of its service model matches."""


def read(path: Path) -> list[Call]:
    """Every signed API call in a recording file (unsigned requests are the harness's own calls
    to moto's control API, `/moto-api/...`, and are left out)."""
    if not path.exists():
        return []
    return [call for line in path.read_text().splitlines() if line and (call := _call(json.loads(line)))]


def _call(entry: dict[str, Any]) -> Call | None:
    if "call" in entry:  # from a harness server that knows what it answered
        c = entry["call"]
        return Call(
            c["key"],
            c["service"],
            c["operation"],
            c["params"],
            c["region"],
            entry["status"],
            entry.get("response") or {},
        )
    http = entry["http"]
    if http["path"].startswith("/moto-api"):
        return None
    signed = CREDENTIAL.search(http["headers"].get("authorization", ""))
    if not signed:
        raise Unparsed(f"unsigned request {http['method']} {http['path']}")
    key, region, signing = signed.groups()
    if signing not in SERVICES:
        raise Unparsed(
            f"requests signed for '{signing}' are not read here yet: {http['method']} {http['path']}"
        )
    service = SERVICES[signing]
    operation, params = _parse(service, http)
    response = json.loads(entry["response"]) if entry.get("response", "").startswith("{") else {}
    return Call(key, service, operation, params, region, entry["status"], response)


@cache
def model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def _parse(service: str, http: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    m = model(service)
    body = base64.b64decode(http["body"])
    protocol = m.metadata["protocol"]
    if protocol == "json":
        target = http["headers"].get("x-amz-target", "")
        operation = target.rsplit(".", 1)[-1]
        if operation not in m.operation_names:
            raise Unparsed(f"{service}: X-Amz-Target {target!r} names no operation")
        return operation, json.loads(body or b"{}")
    if protocol in ("query", "ec2"):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
        form.update({k: v[0] for k, v in urllib.parse.parse_qs(http["query"]).items()})
        operation = form.pop("Action", "")
        if operation not in m.operation_names:
            raise Unparsed(f"{service}: Action {operation!r} names no operation")
        form.pop("Version", None)
        return operation, form
    if protocol in ("rest-json", "rest-xml"):
        return _rest(service, http, body)
    raise Unparsed(f"{service}: protocol {protocol} is not read here")


def _rest(service: str, http: dict[str, Any], body: bytes) -> tuple[str, dict[str, Any]]:
    """The REST operation whose method, path template and literal query the request has; of
    several, the one that needs the most of what the request carries (`?policy` picks
    GetBucketPolicy over a plain GET of the bucket)."""
    m = model(service)
    path = urllib.parse.unquote(http["path"])
    query = {k: v[0] for k, v in urllib.parse.parse_qs(http["query"], keep_blank_values=True).items()}
    headers = {k.lower(): v for k, v in http["headers"].items()}
    best: tuple[int, str, dict[str, str]] | None = None
    for name in m.operation_names:
        op = m.operation_model(name)
        if op.http["method"] != http["method"]:
            continue
        matched = _match(op, path, query)
        if matched is None:
            continue
        score, uri = matched
        if name in ("CopyObject", "UploadPartCopy") and "x-amz-copy-source" not in headers:
            continue
        if name in ("PutObject", "UploadPart") and "x-amz-copy-source" in headers:
            continue
        if best is None or score > best[0]:
            best = (score, name, uri)
    if best is None:
        raise Unparsed(f"{service}: no operation matches {http['method']} {path}?{http['query']}")
    _, name, uri = best
    op = m.operation_model(name)
    params: dict[str, Any] = {}
    members = op.input_shape.members if op.input_shape else {}
    for member, shape in members.items():
        where = shape.serialization.get("location")
        wire = shape.serialization.get("name", member)
        if where == "uri" and wire in uri:
            params[member] = uri[wire]
        elif where == "querystring" and wire in query:
            params[member] = query[wire]
        elif where == "header" and wire.lower() in headers:
            params[member] = headers[wire.lower()]
    if body and service == "batch":
        params.update(json.loads(body))
    if name == "DeleteObjects" and body:
        root = ET.fromstring(body)  # noqa: S314 - our own recording of our own requests
        params["Delete"] = {"Objects": [{"Key": k.text} for k in root.iter() if k.tag.endswith("Key")]}
    return name, params


def _match(op: Any, path: str, query: dict[str, str]) -> tuple[int, dict[str, str]] | None:
    """(specificity, path variables) when the request fits `op`'s requestUri, else None."""
    template, _, literal = op.http["requestUri"].partition("?")
    names = re.findall(r"\{([^}]+)\}", template)
    pattern = "^" + re.sub(
        r"\\\{([^}]+)\\\}", lambda g: "(.+)" if g[1].endswith("+") else "([^/]+)", re.escape(template)
    )
    found = re.match(pattern.rstrip("/") + "/?$", path)
    if not found:
        return None
    score = 0
    for part in filter(None, literal.split("&")):
        key, _, value = part.partition("=")
        if key not in query or (value and query[key] != value):
            return None
        score += 1
    members = op.input_shape.members if op.input_shape else {}
    required = set(op.input_shape.required_members) if op.input_shape else set()
    for member, shape in members.items():
        if shape.serialization.get("location") == "querystring":
            wire = shape.serialization.get("name", member)
            if wire in query:
                score += 1
            elif member in required:
                return None
    uri = {name.rstrip("+"): value for name, value in zip(names, found.groups(), strict=True)}
    return score, uri
