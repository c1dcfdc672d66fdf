"""Every AWS request opsctl makes, evaluated against the permissions the stack really grants.

moto enforces no IAM, so a request no policy allows passes every other test and fails on a real
account. Here the stack is applied by real Terraform to a moto server over TLS (as
tests/test_terraform.py does, with the GitHub deploy role and the state in S3), and then used
the way it is on AWS, each party signing with an access key of its own:

- the deploy role: `opsctl infra push` (ECR login, the pushes, the apply that rolls the job
  definitions to the new tag), as the deploy workflow does it;
- the operator: launch, watch, status, logs, report (with the price lookup), kill, resume, list,
  a step with its own image and `opsctl infra definitions --deregister`, prune;
- the job role: the workers of a contiguous and a dynamic step, run by the Batch player
  (tests/batch_player.py) as Batch runs them, with a retried attempt and a resume;
- the instance role: the awslogs driver's writes of the children's output.

Every request is recorded where it arrives (moto's server, the Batch player, the Price List),
read back with botocore's service models (tests/iam/requests.py), mapped to the IAM actions and
resources it needs (tests/iam/actions.py, from iam-data) and evaluated by a real IAM evaluator
(@cloud-copilot/iam-simulate) with the policies read back from moto after the apply: each role's
own policies and its permissions boundary, the bucket policy, the KMS key policies, and the
operator policy the stack renders for administrators to attach. Each must be allowed, and each
action a role is granted must be used by some request.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests import batch_player, moto_env
from tests.batch_player import BatchPlayer
from tests.conftest import ROOT
from tests.helpers import OPSCTL, moto_client
from tests.iam.actions import Authorization, World, authorizations
from tests.iam.evaluate import Principal, decisions, unused_grants
from tests.iam.requests import Call, read
from tests.price_list import PriceList, product, serving
from tests.test_terraform import DOCKER, emulated_module, emulator_env, terraform_ok, tls_moto

ACCOUNT, REGION, NAME = "123456789012", "us-east-1", "opsctl"
STATE_BUCKET = "opsctl-tf-state-test"
DEPLOY_WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
REPOSITORY = "octo-org/opsctl"
# One access key per party, so each recorded request names who signed it.
KEYS = {
    "admin": "AKIAADMINISTRATOR000",
    "deploy": "AKIADEPLOYROLE000000",
    "operator": "AKIAOPERATOR00000000",
    "job": "AKIAJOBROLE000000000",
    "instance": "AKIAINSTANCEROLE0000",
}
PIPELINE = """\
name: perm
defaults: {{retries: 2, timeout: 600}}
steps:
  - name: split
    queue: cpu
    array_size: 2
    commands: {{template: "test -e {flag} || {{ touch {flag}; exit 3; }}; echo split {{i}}", range: 40}}
  - name: steal
    queue: cpu
    array_size: 3
    split: dynamic
    commands: {{template: "echo steal {{i}}", range: 60}}
    depends_on: [split]
"""
SLOW = """\
name: slow
steps:
  - name: wait
    queue: cpu
    array_size: 2
    commands: {{template: "test -e {flag} || sleep 60; echo waited {{i}}", range: 4}}
"""
OWN = """\
name: own
steps:
  - name: mine
    queue: cpu
    image: {image}
    command: echo mine
"""


@dataclass
class Stack:
    work: Path
    module: Path
    endpoint: str
    cert: Path
    record: Path
    base_env: dict[str, str]
    infra_file: Path
    bucket_policy: dict[str, Any] | None = None

    def env(self, party: str, **extra: str) -> dict[str, str]:
        return {**self.base_env, "AWS_ACCESS_KEY_ID": KEYS[party], **extra}

    def outputs(self) -> dict[str, Any]:
        return {k: v["value"] for k, v in json.loads(self.infra_file.read_text()).items()}

    def boto(self, service: str, party: str = "admin") -> Any:
        return moto_client(service, self.endpoint, KEYS[party], cert=self.cert, region=REGION)

    def opsctl(
        self, party: str, *args: str, timeout: float = 600, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [OPSCTL, *args],
            env=self.env(party, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.work,
        )

    def infra(self, party: str, verb: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """`opsctl infra VERB` on the stack, its state in S3: the administrator's variables are
        what its first apply stored there (README, "Stored variables")."""
        return self.opsctl(
            party,
            "infra",
            verb,
            "--dir",
            str(self.module),
            "--backend-config",
            str(self.work / "backend.hcl"),
            *args,
            **extra,
        )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack applied by an administrator, its state in S3, the GitHub deploy role in it."""
    reason = terraform_ok()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("permissions")
    record = work / "requests.jsonl"
    cert, proc, endpoint = tls_moto(work, record)
    module = emulated_module(work)
    (work / "admin.tfvars").write_text(
        f'github_repository = "{REPOSITORY}"\nterraform_state_bucket = "{STATE_BUCKET}"\n'
    )
    (work / "backend.hcl").write_text(
        f'bucket = "{STATE_BUCKET}"\nkey = "opsctl/terraform.tfstate"\nregion = "{REGION}"\n'
        "use_path_style = true\n"
    )
    base_env = {**emulator_env(work, endpoint, cert, DOCKER), "PUSH_RECORD": str(record)}
    built = Stack(work, module, endpoint, cert, record, base_env, work / "infra.json")
    built.boto("s3").create_bucket(Bucket=STATE_BUCKET)
    admin = ["--var-file", str(work / "emulator.tfvars"), "--var-file", str(work / "admin.tfvars")]
    ok(built.infra("admin", "apply", *admin, "--yes", "--infra", str(built.infra_file)))
    bucket = built.outputs()["bucket"]
    built.bucket_policy = _policy(built.boto("s3").get_bucket_policy(Bucket=bucket)["Policy"])
    try:
        yield built
    finally:
        moto_env.stop_server(proc)


@pytest.fixture(scope="module")
def recorded(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Call]]:
    """Every party's calls, by party, after the deploy and the operator's day."""
    before = len(read(stack.record))
    # `make push` as the deploy role (the images job's ECR calls, and an apply with their tag);
    # then the deploy workflow's roll step, whose plan is the refresh alone by now.
    ok(stack.infra("deploy", "push", "--tag", "0123abcd4567", "--yes", "--infra", str(stack.infra_file)))
    outputs = stack.outputs()
    assert outputs["cpu_image"].endswith(":0123abcd4567")
    roll = ["--yes", "--roll-only", "--require-stored-vars", "--image-tag", "0123abcd4567"]
    assert " ".join(roll[:3]) in DEPLOY_WORKFLOW.read_text(), "the roll step as deploy.yml runs it"
    ok(stack.infra("deploy", "apply", *roll, "--infra", str(stack.infra_file)))
    work = tmp_path_factory.mktemp("day")
    _allow_https(stack, outputs["bucket"])
    _operators_day(stack, outputs, work)
    calls = read(stack.record)[before:]
    by_party: dict[str, list[Call]] = defaultdict(list)
    parties = {key: party for party, key in KEYS.items()}
    for call in calls:
        assert call.key in parties, f"a request signed by an unknown key: {call}"
        by_party[parties[call.key]].append(_as_on_aws(call))
    return dict(by_party)


def _as_on_aws(call: Call) -> Call:
    """The call as it is sent on AWS, where the emulator's differs: on an account, the provider's
    default_tags (terraform/providers.tf) tag every resource Terraform registers, so a job
    definition's new revision carries them; the emulator's apply has none (moto copies default
    tags into launch template data, so every plan would differ: tests/test_terraform.py)."""
    if call.service == "batch" and call.operation == "RegisterJobDefinition" and call.key == KEYS["deploy"]:
        params = {**call.params, "tags": {"opsctl:stack": NAME, **call.params.get("tags", {})}}
        return replace(call, params=params)
    return call


def _allow_https(stack: Stack, bucket: str) -> None:
    """moto reads `aws:SecureTransport` as false even over HTTPS (tests/test_terraform.py), so the
    bucket's TLS-only statement denies every request there: dropped from moto's copy only. The
    evaluation uses the policy as the stack rendered it (`Stack.bucket_policy`)."""
    s3 = stack.boto("s3")
    policy = _policy(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy == stack.bucket_policy, "the deploy left the bucket policy as the stack renders it"
    kept = [s for s in policy["Statement"] if "aws:SecureTransport" not in json.dumps(s.get("Condition", {}))]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({**policy, "Statement": kept}))


def _operators_day(stack: Stack, outputs: dict[str, Any], work: Path) -> None:
    """The operator's commands over two runs on AWS Batch (played), and one with its own image."""
    queues = {outputs[f"{q}_queue"]: outputs[f"{q}_queue"].rsplit("/", 1)[-1] for q in ("cpu", "gpu")}
    definitions = [outputs["cpu_job_definition"], outputs["gpu_job_definition"]]
    recording = stack.record.open("a", buffering=1)

    def record(entry: dict[str, Any]) -> None:
        recording.write(json.dumps(entry) + "\n")

    job_env = {k: v for k, v in stack.env("job").items() if k.startswith("AWS_")}
    player = BatchPlayer(
        work / "player",
        queues=queues,
        definitions=definitions,
        log_group=outputs["log_group"],
        record=record,
        worker_env=job_env,
        logs_client=stack.boto("logs", "instance"),
    )
    (work / "player").mkdir()
    prices = PriceList([product("c5.large", REGION, 0.085, 2, 0), product("c5.xlarge", REGION, 0.17, 4, 0)])
    environments = {name: (f"{name}-env", "SPOT", ["c5"]) for name in queues.values()}
    with pytest.MonkeyPatch.context() as patch, serving(prices, record) as pricing:
        for name, environment in environments.items():
            patch.setitem(batch_player.ENVIRONMENTS, name, environment)
        env = {"AWS_ENDPOINT_URL_BATCH": player.start(), "AWS_ENDPOINT_URL_PRICING": pricing}
        try:
            _runs(stack, player, work, env)
        finally:
            player.stop()
    # A step with its own image, against moto's Batch (the player registers no definitions).
    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/tomo:1"
    ecr = stack.boto("ecr")
    ecr.create_repository(repositoryName="tomo")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    ecr.put_image(repositoryName="tomo", imageTag="1", imageManifest=json.dumps(manifest))
    own = work / "own.yaml"
    own.write_text(OWN.format(image=image))
    own_run = stack.opsctl(
        "operator", "launch", str(own), "--backend", "aws", "--infra", str(stack.infra_file), "--json"
    )
    logs = stack.opsctl(
        "operator",
        "logs",
        json.loads(ok(own_run))["run_id"],
        "mine",
        "--backend",
        "aws",
        "--infra",
        str(stack.infra_file),
    )
    print("LOGS", logs.returncode, logs.stdout[-500:], logs.stderr[-500:])
    listed = ok(stack.opsctl("operator", "infra", "definitions", "--infra", str(stack.infra_file)))
    assert "tomo:1" in listed
    ok(stack.opsctl("operator", "infra", "definitions", "--deregister", "--infra", str(stack.infra_file)))
    ok(stack.opsctl("operator", "list", "--backend", "aws", "--infra", str(stack.infra_file)))
    ok(stack.opsctl("operator", "prune", "--older-than", "0"))
    recording.close()


def _runs(stack: Stack, player: BatchPlayer, work: Path, env: dict[str, str]) -> None:
    infra = ["--backend", "aws", "--infra", str(stack.infra_file)]
    spec = work / "pipeline.yaml"
    spec.write_text(PIPELINE.format(flag=work / "failed-once"))
    run_id = json.loads(ok(stack.opsctl("operator", "launch", str(spec), *infra, "--json", **env)))["run_id"]
    ok(stack.opsctl("operator", "watch", run_id, *infra, "--interval", "0.5", **env))
    status = json.loads(ok(stack.opsctl("operator", "status", run_id, *infra, "--json", **env)))
    assert status["state"] == "SUCCEEDED", status
    ok(stack.opsctl("operator", "logs", run_id, "split", "--index", "1", *infra, **env))
    report = json.loads(ok(stack.opsctl("operator", "report", run_id, *infra, "--json", **env)))
    assert report["cost"]["dollars"] is not None, report["cost"]
    # On-demand capacity is priced from the Price List (spot capacity from EC2's history, above).
    for name in player.queues.values():  # the stack's queues, which the caller patched in
        environment, _, types = batch_player.ENVIRONMENTS[name]
        batch_player.ENVIRONMENTS[name] = (environment, "EC2", types)
    report = json.loads(ok(stack.opsctl("operator", "report", run_id, *infra, "--json", **env)))
    assert "on-demand" in json.dumps(report["cost"]), report["cost"]
    assert any(len(c.attempts) > 1 for c in player.jobs.values()), "a child was retried"

    slow = work / "slow.yaml"
    flag = work / "go-on"
    slow.write_text(SLOW.format(flag=flag))
    run_id = json.loads(ok(stack.opsctl("operator", "launch", str(slow), *infra, "--json", **env)))["run_id"]
    player.wait_until(lambda: len(player.running_children()) == 2)
    ok(stack.opsctl("operator", "kill", run_id, *infra, **env))
    player.wait_until(player.idle)
    flag.touch()
    ok(stack.opsctl("operator", "resume", run_id, *infra, **env))
    ok(stack.opsctl("operator", "watch", run_id, *infra, "--interval", "0.5", **env))


def _policy(document: Any) -> dict[str, Any]:
    return json.loads(document) if isinstance(document, str) else dict(document)


def _role(stack: Stack, prefix: str, name: str, resources: dict[str, dict[str, Any]]) -> Principal:
    """A stack role as IAM evaluates it, read back from moto: its inline and attached policies
    and its permissions boundary."""
    iam = stack.boto("iam")
    [role] = [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(prefix)]
    role = iam.get_role(RoleName=role["RoleName"])["Role"]
    identity = {
        policy: _policy(iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy)["PolicyDocument"])
        for policy in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    }
    for attached in iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]:
        identity[attached["PolicyName"]] = _managed(iam, attached["PolicyArn"])
    boundary = role.get("PermissionsBoundary", {}).get("PermissionsBoundaryArn")
    return Principal(
        name,
        f"arn:aws:sts::{ACCOUNT}:assumed-role/{role['RoleName']}/session",
        ACCOUNT,
        identity,
        _managed(iam, boundary) if boundary else None,
        resources,
        boundary,
    )


def _managed(iam: Any, arn: str) -> dict[str, Any]:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return _policy(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"])


@pytest.fixture(scope="module")
def principals(stack: Stack, recorded: dict[str, list[Call]]) -> dict[str, Principal]:
    outputs = stack.outputs()
    kms = stack.boto("kms")
    bucket = outputs["bucket"]
    assert stack.bucket_policy is not None
    resources = {f"arn:aws:s3:::{bucket}": stack.bucket_policy}
    for key in kms.list_keys()["Keys"]:
        resources[key["KeyArn"]] = _policy(
            kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"]
        )
    operator = Principal(
        "the operator policy",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/scientist/session",
        ACCOUNT,
        {"operator": json.loads(outputs["operator_policy"])},
        None,
        resources,
    )
    return {
        "job": _role(stack, f"{NAME}-job-", "the job role", resources),
        "instance": _role(stack, f"{NAME}-ecs-instance-", "the instance role", resources),
        "deploy": _role(stack, f"{NAME}-deploy-", "the deploy role", resources),
        "operator": operator,
    }


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    outputs = stack.outputs()
    encryption = stack.boto("s3").get_bucket_encryption(Bucket=outputs["bucket"])
    key = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    return World(ACCOUNT, {outputs["bucket"]: key["KMSMasterKeyID"]})


def _authorizations(calls: list[Call], world: World) -> list[Authorization]:
    return [auth for call in calls for auth in authorizations(call, world)]


@pytest.mark.parametrize("party", ["job", "instance", "operator", "deploy"])
def test_every_request_is_allowed(
    party: str, recorded: dict[str, list[Call]], principals: dict[str, Principal], world: World
) -> None:
    auths = _authorizations(recorded.get(party, []), world)
    assert auths, f"{party}: no request recorded"
    answers = decisions(principals[party], auths)
    refused = sorted(
        {
            f"{a.action} on {a.resource}: {answers[a.key()]}  <- {a.why}"
            for a in auths
            if answers[a.key()] != "Allowed"
        }
    )
    assert not refused, f"{principals[party].name} refuses:\n" + "\n".join(refused)


@pytest.mark.parametrize("party", ["job", "operator", "deploy"])
def test_every_grant_is_used(
    party: str, recorded: dict[str, list[Call]], principals: dict[str, Principal], world: World
) -> None:
    unused = unused_grants(principals[party], _authorizations(recorded.get(party, []), world))
    assert not unused, f"{principals[party].name} grants what no request needs:\n" + "\n".join(unused)


def test_the_recording_holds_what_the_permissions_are_proved_for(recorded: dict[str, list[Call]]) -> None:
    """The proof covers what it claims: each party made the calls its part consists of."""
    made = {party: Counter(f"{c.service}:{c.operation}" for c in calls) for party, calls in recorded.items()}
    expected = {
        "job": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListObjectsV2"},
        "instance": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "operator": {
            "batch:SubmitJob",
            "batch:TerminateJob",
            "batch:DescribeJobs",
            "batch:ListJobs",
            "batch:RegisterJobDefinition",
            "batch:DeregisterJobDefinition",
            "logs:GetLogEvents",
            "logs:DescribeLogGroups",
            "ecr:DescribeImages",
            "pricing:GetProducts",
            "s3:PutObject",
            "s3:GetObject",
        },
        "deploy": {
            "ecr:GetAuthorizationToken",
            "ecr:PutImage",
            "batch:RegisterJobDefinition",
            "batch:DeregisterJobDefinition",
            "s3:PutObject",
            "iam:GetRole",
        },
    }
    for party, operations in expected.items():
        missing = operations - set(made.get(party, {}))
        assert not missing, f"{party} made no {sorted(missing)}; it made {sorted(made.get(party, {}))}"
    claims = [c for c in recorded["job"] if c.operation == "PutObject" and c.params.get("IfNoneMatch") == "*"]
    assert claims, "the dynamic step's workers claimed with conditional writes"


def test_a_pipeline_runs_with_iam_enforced_and_the_workers_holding_the_job_role_policy_only(
    stack: Stack, tmp_path: Path
) -> None:
    """The same pipeline, end to end, on a second moto server that enforces IAM: the workers sign
    with a user holding only the job role's actions (the policy as the stack renders it, cut to
    what moto checks: `_actions_only`), the operator with one holding the operator policy's, the
    awslogs driver with one holding the instance role's."""
    outputs = stack.outputs()
    job = _role(stack, f"{NAME}-job-", "the job role", {})
    instance = _role(stack, f"{NAME}-ecs-instance-", "the instance role", {})
    documents = {
        "job": job.identity,
        "operator": {"operator": json.loads(outputs["operator_policy"])},
        "instance": instance.identity,
    }
    proc, endpoint = moto_env.start_server()
    try:
        env = {
            **stack.base_env,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CA_BUNDLE": "",
            "OPSCTL_HOME": str(tmp_path / "home"),
        }
        env.pop("AWS_CA_BUNDLE")
        admin = _enforcing_clients(endpoint)
        admin["s3"].create_bucket(Bucket=outputs["bucket"])
        admin["logs"].create_log_group(logGroupName=outputs["log_group"])
        for q in ("cpu", "gpu"):
            repository, tag = outputs[f"{q}_image"].split("/", 1)[1].rsplit(":", 1)
            admin["ecr"].create_repository(repositoryName=repository)
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            }
            admin["ecr"].put_image(
                repositoryName=repository, imageTag=tag, imageManifest=json.dumps(manifest)
            )
        keys = {}
        for party, policies in documents.items():
            admin["iam"].create_user(UserName=party)
            for name, document in policies.items():
                admin["iam"].put_user_policy(
                    UserName=party, PolicyName=name, PolicyDocument=json.dumps(_actions_only(document))
                )
            key = admin["iam"].create_access_key(UserName=party)["AccessKey"]
            keys[party] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        # From here on, moto authorises every request with the signer's policies.
        moto_env.enforce_iam(endpoint)
        denied = _enforcing_clients(endpoint, keys["job"])["s3"]
        with pytest.raises(Exception, match="AccessDenied"):
            denied.get_bucket_policy(Bucket=outputs["bucket"])  # not one of the job role's actions

        queues = {outputs[f"{q}_queue"]: outputs[f"{q}_queue"].rsplit("/", 1)[-1] for q in ("cpu", "gpu")}
        worker_env = {**{k: v for k, v in env.items() if k.startswith("AWS_")}, **keys["job"]}
        player = BatchPlayer(
            tmp_path / "player",
            queues=queues,
            definitions=[outputs["cpu_job_definition"], outputs["gpu_job_definition"]],
            log_group=outputs["log_group"],
            worker_env=worker_env,
            logs_client=_enforcing_clients(endpoint, keys["instance"])["logs"],
        )
        (tmp_path / "player").mkdir()
        infra = moto_env.write_infra(
            tmp_path / "infra.json", {k: v for k, v in outputs.items() if isinstance(v, str)}
        )
        spec = tmp_path / "pipeline.yaml"
        spec.write_text(PIPELINE.format(flag=tmp_path / "failed-once"))
        with pytest.MonkeyPatch.context() as patch:
            for name in queues.values():
                patch.setitem(batch_player.ENVIRONMENTS, name, (f"{name}-env", "SPOT", ["c5"]))
            operator = {**env, **keys["operator"], "AWS_ENDPOINT_URL_BATCH": player.start()}
            try:
                common = ["--backend", "aws", "--infra", str(infra)]
                launched = subprocess.run(
                    [OPSCTL, "launch", str(spec), *common, "--json"],
                    env=operator,
                    capture_output=True,
                    text=True,
                )
                run_id = json.loads(ok(launched))["run_id"]
                watched = subprocess.run(
                    [OPSCTL, "watch", run_id, *common, "--interval", "0.5"],
                    env=operator,
                    capture_output=True,
                    text=True,
                )
                ok(watched)
                status = subprocess.run(
                    [OPSCTL, "status", run_id, *common, "--json"],
                    env=operator,
                    capture_output=True,
                    text=True,
                )
                assert json.loads(ok(status))["state"] == "SUCCEEDED"
            finally:
                player.stop()
        assert any(len(c.attempts) > 1 for c in player.jobs.values()), "a child was retried"
    finally:
        moto_env.stop_server(proc)


def _actions_only(document: dict[str, Any]) -> dict[str, Any]:
    """The policy as moto can check it: moto authorises most services' requests on resource "*"
    and evaluates few conditions, so a statement scoped to ARNs or conditions would deny there
    what AWS allows. Each statement keeps its effect and actions, on "*"; the resources and
    conditions are what test_every_request_is_allowed proves."""
    statements = document["Statement"]
    statements = [statements] if isinstance(statements, dict) else statements
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": s["Effect"], "Action": s["Action"], "Resource": "*"} for s in statements],
    }


def _enforcing_clients(endpoint: str, key: dict[str, str] | None = None) -> dict[str, Any]:
    credentials = key or {"AWS_ACCESS_KEY_ID": "AKIASETUP00000000000", "AWS_SECRET_ACCESS_KEY": "setup"}
    return {
        service: moto_client(
            service,
            endpoint,
            credentials["AWS_ACCESS_KEY_ID"],
            credentials["AWS_SECRET_ACCESS_KEY"],
            region=REGION,
        )
        for service in ("s3", "iam", "logs", "ecr")
    }


ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"
# What a compromised deploy workflow step could try, each a request the deploy role must not be
# allowed: (action, resource, context). "{deploy}", "{job}", "{boundary}", "{bucket}" and "{key}"
# are the stack's own.
ESCALATIONS = [
    *[
        (action, role, {"iam:PolicyARN": ADMIN_POLICY, "iam:PermissionsBoundary": "{boundary}"})
        for action in (
            "iam:AttachRolePolicy",
            "iam:PutRolePolicy",
            "iam:DetachRolePolicy",
            "iam:DeleteRolePolicy",
            "iam:PutRolePermissionsBoundary",
            "iam:DeleteRolePermissionsBoundary",
            "iam:UpdateAssumeRolePolicy",
            "iam:TagRole",
        )
        for role in ("{deploy}", "{job}")
    ],
    *[
        (action, "{boundary}", {})
        for action in ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy")
    ],
    (
        "iam:CreateRole",
        f"arn:aws:iam::{ACCOUNT}:role/{NAME}-job-next",
        {"iam:PermissionsBoundary": "{boundary}"},
    ),
    ("sts:AssumeRole", "{job}", {}),
    ("iam:PassRole", "{job}", {"iam:PassedToService": "lambda.amazonaws.com"}),
    ("iam:PassRole", "{deploy}", {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/{NAME}-x", {}),
    ("iam:CreateAccessKey", f"arn:aws:iam::{ACCOUNT}:user/{NAME}-x", {}),
    ("iam:CreateLoginProfile", f"arn:aws:iam::{ACCOUNT}:user/{NAME}-x", {}),
    ("iam:AttachUserPolicy", f"arn:aws:iam::{ACCOUNT}:user/{NAME}-x", {"iam:PolicyARN": ADMIN_POLICY}),
    ("iam:AddUserToGroup", f"arn:aws:iam::{ACCOUNT}:group/admins", {}),
    ("iam:CreatePolicy", f"arn:aws:iam::{ACCOUNT}:policy/{NAME}-x", {}),
    ("lambda:CreateFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{NAME}-x", {}),
    ("ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*", {}),
    ("batch:SubmitJob", f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{NAME}-cpu", {}),
    (
        "batch:UpdateComputeEnvironment",
        f"arn:aws:batch:{REGION}:{ACCOUNT}:compute-environment/{NAME}-cpu-x",
        {},
    ),
    ("s3:PutBucketPolicy", "arn:aws:s3:::{bucket}", {}),
    ("s3:GetObject", "arn:aws:s3:::{bucket}/runs/x/manifest.json", {}),
    ("kms:PutKeyPolicy", "{key}", {}),
    ("kms:Decrypt", "{key}", {}),
]


def test_the_deploy_role_can_raise_neither_itself_nor_any_other_role(
    stack: Stack, principals: dict[str, Principal], world: World
) -> None:
    """Every way up a compromised workflow step could try is refused: the deploy role holds no
    IAM write, passes only the job role to ECS tasks, and reads no run data."""
    deploy = principals["deploy"]
    values = {
        "{deploy}": deploy.arn.replace(":sts::", ":iam::")
        .replace("assumed-role/", "role/")
        .rsplit("/", 1)[0],
        "{job}": principals["job"]
        .arn.replace(":sts::", ":iam::")
        .replace("assumed-role/", "role/")
        .rsplit("/", 1)[0],
        "{boundary}": principals["job"].boundary_arn,
        "{bucket}": stack.outputs()["bucket"],
        "{key}": next(iter(world.kms_buckets.values())),
    }

    def fill(text: str) -> str:
        for k, v in values.items():
            text = text.replace(k, v)
        return text

    tries = [
        Authorization(
            action, fill(resource), {k: fill(v) for k, v in context.items()}, f"{action} {resource}"
        )
        for action, resource, context in ESCALATIONS
    ]
    answers = decisions(deploy, tries)
    allowed = [f"{a.why}: {answers[a.key()]}" for a in tries if answers[a.key()] != "ImplicitlyDenied"]
    assert not allowed, "the deploy role may:\n" + "\n".join(allowed)


def test_every_role_of_the_stack_carries_the_boundary_which_grants_no_iam_writes(
    principals: dict[str, Principal],
) -> None:
    for party in ("job", "instance"):
        assert principals[party].boundary is not None, party
    boundary = principals["job"].boundary
    assert boundary is not None
    iam_actions = {
        a
        for s in boundary["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        if a.startswith("iam:")
    }
    assert iam_actions == {
        "iam:GetInstanceProfile",
        "iam:GetRole",
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
    }
