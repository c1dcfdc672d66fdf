"""The docs, run: every shell line of README.md and docs/*.md as printed, and docs/cli.md's
synopsis against the options the CLI registers.

Why: the docs are what a new user runs first, and they rot without a sound (a command renamed, an
option dropped, a table changed, a placeholder nobody can type). So each shell line is run here,
and a line that cannot run here has to say why in EXEMPT below, where a reviewer sees it.

The rules the docs follow, enforced by this file:

- Fences. Every fenced block names its language. `sh`: every line is shell: commands, their `\\`
  continuations and heredoc bodies, and `#` comment lines, which are not commands and are not
  run. `console`: a command is a line starting with `$ ` (the prompt is stripped), and the lines
  under it, up to the next `$ `, are its output. `yaml`, `json`, `dockerfile` and `text` are not
  shell and never run; a `text` line starting with `$ ` fails the test (a shell session belongs in
  `console`), and so does a fence with no language or another one.
- Sessions. Each block runs as one bash session, its commands in order, so what a line sets
  (`run=$(opsctl launch ...)`, `. .venv/bin/activate`) reaches the block's later lines. Each
  command is its own test, named FILE:LINE of its first line.
- Exit codes. A command must exit 0, unless its trailing comment says `# exit N`.
- Output. A `console` command with output lines under it must print exactly those lines (stdout,
  then stderr; trailing spaces ignored; not a terminal, 80 columns). A command shown without
  output is checked for its exit code only.
- Sandbox. The sessions run from the top of a copy of the checkout (its tracked and untracked,
  not ignored files), where the docs say to run them. The bin/ of the virtual environment running
  the tests is first on PATH; `.venv` in the copy is a virtual environment of its own that sees
  that one's packages and `opsctl`, so that `. .venv/bin/activate` works and no doc line can
  rebuild or remove the environment the tests run in. HOME and OPSCTL_HOME are fresh directories, no
  AWS_, OPSCTL_, TF_ or XDG_ variable of the caller's gets through, and every proxy variable and
  AWS_ENDPOINT_URL name a closed port on 127.0.0.1: a line that reaches for AWS or the internet
  fails at once instead of reaching it. `.opsctl/infra.json` holds an infra file of the shape
  `terraform output -json` writes (tests/moto_env.py), as `make infra` would leave it.
- Exempt lines. EXEMPT maps (file, the command's first line as printed, prompt stripped) to why
  it cannot run here and what runs it instead. Such a command is reported as skipped with that
  reason; an entry that matches no documented line fails, so the table cannot outlive its lines.
  Every other shell line runs: a new line that needs AWS, a GPU or a Docker engine fails here
  until it is exempted, with its reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.moto_env import ROOT, free_port, write_infra

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("sh", "console")
NOT_SHELL = ("yaml", "json", "dockerfile", "text")
SESSION_TIMEOUT = 240  # seconds for one block; the slowest, README's local run, takes about 10 s
COLUMNS = "80"

TESTED_BY_TEST_AWS = (
    "tests/test_aws.py runs launch, status (found without flags), watch from a fresh home with "
    "--backend aws --infra, and logs through the CLI and AwsBackend against moto and AWS Batch "
    "played with real workers (test_list_and_cli_with_infra_file, test_logs_follow_the_newest_attempt)"
)
GPU_QUEUE = (
    "needs AWS Batch: the stack applied to an account, and for hello's gpu step a host with a GPU "
    "(`run --preflight-gpu`, which the played Batch's hosts, this machine, fail). "
)
ECR = "pushes an image to a real account's ECR with the AWS CLI and a Docker engine; "

SLURM = (
    "needs a Slurm cluster (the doc test's sandbox has none); tests/test_slurm.py runs launch, "
    "watch, status, logs, kill, resume and report --backend slurm against a real one-node Slurm"
)

# (file, the command's first line as printed, prompt stripped): why it does not run here.
EXEMPT: dict[tuple[str, str], str] = {
    ("README.md", "run=$(opsctl launch examples/hello.yaml --backend slurm)"): SLURM,
    (
        "README.md",
        "opsctl watch $run                          # one sacct (or squeue) per poll, for the whole run",
    ): SLURM,
    ("README.md", "opsctl logs $run process --index 3 --follow"): SLURM,
    (
        "README.md",
        "opsctl kill $run                           # scancel, until Slurm shows none of its jobs live",
    ): SLURM,
    (
        "README.md",
        "opsctl report $run -o run.html             # with accounting: CPU time and peak memory from sacct",
    ): SLURM,
    (
        "README.md",
        "make demo              # run the tomography pipeline (examples/tomo) locally with a live "
        "table; prints the montage and RMSE",
    ): "rebuilds .venv (python -m venv, then pip from the network) whenever pyproject.toml or "
    "constraints.txt is newer than it, as in a fresh copy, then runs the 4-step tomography "
    "pipeline with a live table; tests/test_tomo.py (test_pipeline_end_to_end_on_the_local_backend) "
    "runs that pipeline through the local backend",
    (
        "README.md",
        "make test              # run the test suite (real moto S3 server on 127.0.0.1, real subprocesses)",
    ): "the whole suite, this test included (about 30 minutes on 2 cores); CI runs it (.ci/run)",
    ("README.md", "run=$(opsctl launch examples/hello.yaml --backend aws --infra .opsctl/infra.json)"): (
        GPU_QUEUE + TESTED_BY_TEST_AWS
    ),
    (
        "README.md",
        "opsctl watch $run                                    "
        "# launched from this machine: found without flags",
    ): GPU_QUEUE + TESTED_BY_TEST_AWS,
    (
        "README.md",
        "opsctl status $run --backend aws --infra infra.json  # from any machine with credentials",
    ): GPU_QUEUE + TESTED_BY_TEST_AWS,
    ("README.md", "opsctl logs $run preprocess --index 3 --follow       # CloudWatch Logs of child 3"): (
        GPU_QUEUE + TESTED_BY_TEST_AWS
    ),
    (
        "README.md",
        "aws ecr create-repository --repository-name tomo --image-tag-mutability IMMUTABLE \\",
    ): ECR + "the AWS CLI is no dependency of this project",
    ("README.md", 'docker build -f examples/tomo/Dockerfile -t "$repo:1" \\'): ECR
    + "its base is the stack's CPU image in ECR; `make images` (images/build.py) builds this "
    "Dockerfile on the local opsctl-cpu image, and tests/test_containers.py runs the result",
    (
        "README.md",
        'aws ecr get-login-password | docker login --username AWS --password-stdin "${repo%%/*}"',
    ): ECR
    + "opsctl's own ECR login (`make push`) is tested in tests/test_infra.py and tests/test_terraform.py",
    ("README.md", 'docker push "$repo:1"'): ECR
    + "the push `make push` makes is played in tests/test_terraform.py",
    ("README.md", "opsctl launch examples/tomo/pipeline.yaml --backend aws --watch"): (
        "needs AWS Batch and the image pushed above; tests/test_images.py launches steps with their "
        "own ECR image on moto (derived job definitions)"
    ),
    ("README.md", "opsctl launch examples/tomo/pipeline.yaml --containers      # the same image, locally"): (
        "needs a Docker engine with the images `make images` builds and, for the tomography "
        "pipeline's `gpus: 1` step, one that gives containers GPUs (launch refuses otherwise, exit 2); "
        "tests/test_containers.py runs this pipeline under --containers (with --no-gpus)"
    ),
    ("README.md", "terraform -chdir=terraform output -raw operator_policy > operator.json"): (
        "needs the state of an applied stack in terraform/; tests/test_permissions.py reads "
        "operator_policy from a stack real Terraform applied to moto"
    ),
    (
        "README.md",
        "aws iam create-policy --policy-name opsctl-operator --policy-document file://operator.json",
    ): "creates a policy in a real account's IAM (and the AWS CLI is no dependency of this project)",
    ("README.md", "opsctl infra apply --var-file deploy.tfvars --backend-config backend.hcl"): (
        "applies the stack to a real account with its state in TF_STATE_BUCKET; tests/test_terraform.py "
        "(test_the_deploy_workflow_applies_what_the_administrator_applied) makes this apply, with "
        "this backend.hcl (plus moto's path style) and these variables, on moto"
    ),
}

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
HEREDOC = re.compile(r"(?<!<)<<(?P<tabs>-?)\s*(?P<quote>['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P=quote)")
EXIT = re.compile(r"#\s*exit\s+(\d+)\b")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*|-[a-zA-Z])(?![\w-])")
PLACEHOLDER = re.compile(r"[A-Z][A-Z_]*")
IN_SHELL = re.compile(r"(?:^|(?<=[\s;|&(]))opsctl(?![\w-])((?:[ \t]+[^\s;|&)#]+)*)")


@dataclass(frozen=True)
class Block:
    """A fenced block: its file, the line of its opening fence, its language and its lines."""

    doc: str
    line: int
    lang: str
    lines: tuple[tuple[int, str], ...]  # (line number, text less the fence's indent)


@dataclass(frozen=True)
class Command:
    """One command of a shell block, as the docs print it."""

    doc: str
    line: int  # of its first line
    block: int  # the line of its block's opening fence
    text: str  # prompt stripped; continuation lines and heredoc bodies included
    expect_exit: int
    output: tuple[str, ...] | None  # the output lines a console block shows under it, if any

    @property
    def first(self) -> str:
        return self.text.splitlines()[0].strip()

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class _Draft:
    """A command being read: open while a `\\` continues it or a heredoc's body is still due."""

    line: int
    lines: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    heredocs: list[tuple[str, bool]] = field(default_factory=list)  # delimiter, `<<-`
    continued: bool = False

    @property
    def open(self) -> bool:
        return self.continued or bool(self.heredocs)

    def add(self, text: str) -> None:
        self.lines.append(text)
        if self.heredocs:  # a body line: no shell syntax in it
            word, tabs = self.heredocs[0]
            if (text.lstrip("\t") if tabs else text) == word:
                self.heredocs.pop(0)
            return
        code, comment = split_comment(text)
        self.comments.append(comment)
        self.heredocs += [(m["word"], m["tabs"] == "-") for m in HEREDOC.finditer(code)]
        self.continued = code.endswith("\\") and not comment

    def done(self, doc: str, block: int) -> Command:
        exits = [int(m[1]) for m in map(EXIT.match, self.comments) if m]
        shown = [line.rstrip() for line in self.output]
        while shown and not shown[-1]:
            shown.pop()
        return Command(
            doc,
            self.line,
            block,
            "\n".join(self.lines),
            exits[-1] if exits else 0,
            tuple(shown) if shown else None,
        )


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's code and its trailing `#` comment: a `#` that starts a word, outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), ""


def parse(doc: str, text: str) -> tuple[list[Block], list[Command], list[str]]:
    """The fenced blocks of a Markdown text, the commands of its shell blocks, and what breaks
    the fence rules (module docstring)."""
    blocks: list[Block] = []
    problems: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        info = opening["info"].strip()
        body: list[tuple[int, str]] = []
        j = i + 1
        while j < len(lines) and not re.fullmatch(rf" *{fence[0]}{{{len(fence)},}} *", lines[j]):
            line = lines[j]
            body.append((j + 1, line[indent:] if not line[:indent].strip() else line.lstrip()))
            j += 1
        if j == len(lines):
            problems.append(f"{doc}:{i + 1}: a fence that never closes")
        blocks.append(Block(doc, i + 1, info.split()[0] if info else "", tuple(body)))
        i = j + 1
    commands: list[Command] = []
    for block in blocks:
        if block.lang in SHELL:
            found, broken = shell_commands(block)
            commands += found
            problems += broken
        elif block.lang not in NOT_SHELL:
            named = f"language {block.lang!r}" if block.lang else "no language"
            problems.append(f"{doc}:{block.line}: a fence with {named}: name one of {SHELL + NOT_SHELL}")
        elif block.lang == "text":
            problems += [
                f"{doc}:{n}: a `$ ` prompt in a text block: a shell session belongs in a console block"
                for n, line in block.lines
                if line.startswith("$ ")
            ]
    return blocks, commands, problems


def shell_commands(block: Block) -> tuple[list[Command], list[str]]:
    """The commands of a `sh` or `console` block, each with its expected exit code and output."""
    commands: list[Command] = []
    problems: list[str] = []
    draft: _Draft | None = None
    for number, line in block.lines:
        if draft is not None and draft.open:
            draft.add(line)
            continue
        if block.lang == "console":
            if line.startswith("$ ") or line == "$":
                if draft is not None:
                    commands.append(draft.done(block.doc, block.line))
                draft = _Draft(number)
                draft.add(line[2:])
            elif draft is not None:
                draft.output.append(line)
            elif line.strip():
                problems.append(f"{block.doc}:{number}: output before any `$ ` command")
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue  # a comment line is not a command
        if draft is not None:
            commands.append(draft.done(block.doc, block.line))
        draft = _Draft(number)
        draft.add(line)
    if draft is not None:
        if draft.open:
            problems.append(f"{block.doc}:{draft.line}: the block ends inside this command")
        commands.append(draft.done(block.doc, block.line))
    return commands, problems


def read_docs() -> tuple[list[Block], list[Command], list[str]]:
    blocks: list[Block] = []
    commands: list[Command] = []
    problems: list[str] = []
    for path in DOC_FILES:
        found = parse(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        blocks += found[0]
        commands += found[1]
        problems += found[2]
    return blocks, commands, problems


BLOCKS, COMMANDS, PROBLEMS = read_docs()


def exemption(command: Command) -> str | None:
    return EXEMPT.get((command.doc, command.first))


# --- running the sessions -------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    exit_code: int | None  # None: the session ended (or timed out) before the command did
    stdout: str
    stderr: str


def run_session(
    commands: list[Command], cwd: Path, env: dict[str, str], work: Path, timeout: float
) -> dict[int, Result]:
    """Run `commands` in order in one bash session in `cwd`; each one's exit code and output, by
    line. Each runs as printed inside `{ ...; }` (this shell, so what it sets stays set), its
    stdin /dev/null, its stdout and stderr to files of its own."""
    work.mkdir(parents=True)
    script = []
    for command in commands:
        files = shlex.quote(str(work / str(command.line)))
        script += [f"{{ {command.text}", f"}} >{files}.out 2>{files}.err </dev/null", f"echo $? >{files}.rc"]
    (work / "session.sh").write_text("\n".join(script) + "\n", encoding="utf-8")
    session = subprocess.Popen(
        ["bash", "--noprofile", "--norc", str(work / "session.sh")],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its process group: all of it ends if it runs out of time
    )
    try:
        session.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(session.pid, signal.SIGKILL)
        session.wait()
    results = {}
    for command in commands:
        base = work / str(command.line)
        rc = base.with_suffix(".rc")
        out, err = base.with_suffix(".out"), base.with_suffix(".err")
        results[command.line] = Result(
            int(rc.read_text()) if rc.is_file() and rc.read_text().strip() else None,
            out.read_text(errors="replace") if out.is_file() else "",
            err.read_text(errors="replace") if err.is_file() else "",
        )
    return results


def mismatch(command: Command, result: Result) -> str | None:
    """What is wrong with `result` for `command`, as a message naming the line, or None."""
    shown = f"{command.id}: `{command.first}`"
    said = f"\n--- stdout\n{result.stdout[-3000:].rstrip()}\n--- stderr\n{result.stderr[-3000:].rstrip()}"
    if result.exit_code is None:
        return f"{shown} did not finish: its block's session ended or ran out of time first{said}"
    if result.exit_code != command.expect_exit:
        expected = "0" if command.expect_exit == 0 else f"{command.expect_exit} (its `# exit` comment)"
        return f"{shown} exited {result.exit_code}; the docs expect {expected}{said}"
    if command.output is not None:
        printed = [line.rstrip() for line in [*result.stdout.splitlines(), *result.stderr.splitlines()]]
        while printed and not printed[-1]:
            printed.pop()
        if printed != list(command.output):
            docs, got = "\n".join(command.output), "\n".join(printed)
            return f"{shown} printed other lines than the docs show:\n--- docs\n{docs}\n--- printed\n{got}"
    return None


@dataclass
class Sandbox:
    """Where the docs' commands run (module docstring, "Sandbox"), and what each block printed."""

    root: Path
    env: dict[str, str]
    work: Path
    results: dict[tuple[str, int], dict[int, Result]] = field(default_factory=dict)

    def result(self, command: Command) -> Result:
        """The command's result, from its block's session, run once, the first time it is asked."""
        key = (command.doc, command.block)
        if key not in self.results:
            runnable = [c for c in COMMANDS if (c.doc, c.block) == key and exemption(c) is None]
            work = self.work / f"{command.doc.replace('/', '-')}-{command.block}"
            self.results[key] = run_session(runnable, self.root, self.env, work, SESSION_TIMEOUT)
        return self.results[key][command.line]


def checkout_copy(target: Path) -> None:
    """The checkout's tracked and untracked, not ignored files (as they are now, edits included)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError):  # not a git checkout: all but what git ignores
        shutil.copytree(
            ROOT,
            target,
            symlinks=True,
            ignore=shutil.ignore_patterns(".git", ".venv*", "*cache*", ".hypothesis", "node_modules"),
            dirs_exist_ok=True,
        )
        return
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() or source.is_symlink():  # not one deleted since, or a submodule
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)


def stand_in_venv(folder: Path) -> None:
    """A virtual environment at `folder` that sees this one's packages and its `opsctl` and
    `opsctl-worker`: what `.venv` is to the docs, without being the one the tests run in."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    (site,) = (folder / "lib").glob("python3*/site-packages")
    (site / "opsctl-docs.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    )
    for name in ("opsctl", "opsctl-worker"):
        (folder / "bin" / name).symlink_to(Path(sys.executable).parent / name)


def sandbox_env(home: Path, opsctl_home: Path) -> dict[str, str]:
    """The caller's environment less what would make the docs' commands reach beyond this test."""
    dropped = ("AWS_", "OPSCTL_", "TF_", "XDG_", "PIP_", "PYTHON", "VIRTUAL_ENV", "TTY_", "LC_")
    names = {"BASH_ENV", "ENV", "FORCE_COLOR", "NO_COLOR", "CLICOLOR_FORCE", "COLUMNS", "LINES"}
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxies = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(dropped) and k not in names},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(home),
        "OPSCTL_HOME": str(opsctl_home),
        "SHELL": "/bin/bash",
        "LC_ALL": "C.UTF-8",
        "COLUMNS": COLUMNS,
        "LINES": "24",
        **dict.fromkeys(proxies, closed),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AWS_ENDPOINT_URL": closed,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "PIP_NO_INDEX": "1",
        "CHECKPOINT_DISABLE": "1",  # Terraform's version check
    }


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    base = tmp_path_factory.mktemp("docs")
    root = base / "checkout"
    root.mkdir()
    checkout_copy(root)
    stand_in_venv(root / ".venv")
    (root / ".opsctl").mkdir()
    account = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    write_infra(
        root / ".opsctl" / "infra.json",
        {
            "region": "us-east-1",
            "bucket": "opsctl-runs-docs",
            "cpu_queue": "arn:aws:batch:us-east-1:123456789012:job-queue/opsctl-cpu",
            "gpu_queue": "arn:aws:batch:us-east-1:123456789012:job-queue/opsctl-gpu",
            "cpu_job_definition": "arn:aws:batch:us-east-1:123456789012:job-definition/opsctl-cpu:1",
            "gpu_job_definition": "arn:aws:batch:us-east-1:123456789012:job-definition/opsctl-gpu:1",
            "cpu_image": f"{account}/opsctl/cpu:latest",
            "gpu_image": f"{account}/opsctl/gpu:latest",
            "log_group": "/aws/batch/opsctl",
        },
    )
    home, opsctl_home = base / "home", base / "opsctl-home"
    home.mkdir()
    env = sandbox_env(home, opsctl_home)
    try:
        yield Sandbox(root, env, base / "sessions")
    finally:
        # A run a failed line left going ends here, not after the test (a finished run: no-op).
        for run in sorted((opsctl_home / "runs").glob("[!.]*")):
            subprocess.run(
                [str(Path(sys.executable).parent / "opsctl"), "kill", run.name],
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_runs_as_printed(command: Command, sandbox: Sandbox) -> None:
    """The command, exactly as the docs print it, exits as they say and prints what they show."""
    reason = exemption(command)
    if reason is not None:
        pytest.skip(f"exempt (tests/test_docs.py EXEMPT): {reason}")
    wrong = mismatch(command, sandbox.result(command))
    if wrong is not None:
        pytest.fail(wrong, pytrace=False)


def test_the_docs_follow_the_fence_rules() -> None:
    """A shell line in an unlabelled or mislabelled block would never run: the rules say where
    each kind of block goes, so that none can slip by."""
    assert PROBLEMS == []
    assert len(COMMANDS) >= 20, "the shell blocks were not found"


def test_every_exemption_names_a_documented_line() -> None:
    """An exemption whose line changed or went would exempt nothing and hide that it is stale."""
    documented = {(c.doc, c.first) for c in COMMANDS}
    assert sorted(set(EXEMPT) - documented) == []


# --- docs/cli.md's synopsis against the registered options ---------------------------------


def registered() -> dict[tuple[str, ...], tuple[list[str], set[str]]]:
    """Each command of the CLI with options or none below it (Typer's click tree): its path, its
    arguments' names (as usage spells them) and every name of every option but --help."""
    import typer

    from opsctl.cli import app

    found: dict[tuple[str, ...], tuple[list[str], set[str]]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        subcommands: dict[str, Any] = getattr(command, "commands", {})
        if command.params or not subcommands:
            arguments = [
                p.human_readable_name.upper() for p in command.params if p.param_type_name == "argument"
            ]
            options = {
                name
                for p in command.params
                if p.param_type_name == "option"
                for name in (*p.opts, *p.secondary_opts)
            }
            found[path] = (arguments, options)
        for name, sub in subcommands.items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def resolve(words: list[str], tree: dict[tuple[str, ...], Any]) -> list[tuple[tuple[str, ...], list[str]]]:
    """The commands `opsctl WORDS` names (`plan|apply` names two) and, for each, the words after
    its path."""
    groups = {path[:i] for path in tree for i in range(len(path))}
    paths: list[tuple[tuple[str, ...], list[str]]] = [((), words)]
    while True:
        longer: list[tuple[tuple[str, ...], list[str]]] = []
        for path, rest in paths:
            names = rest[0].split("|") if rest else []
            if (
                path in groups
                and names
                and all((*path, name) in tree or (*path, name) in groups for name in names)
            ):
                longer += [((*path, name), rest[1:]) for name in names]
            else:
                longer.append((path, rest))
        if longer == paths:
            return paths
        paths = longer


def synopsis() -> list[tuple[int, str]]:
    """The lines of docs/cli.md's synopsis: its first block, the lines starting with `opsctl`."""
    first = next(b for b in BLOCKS if b.doc == "docs/cli.md")
    assert first.lang == "text", "docs/cli.md opens with its synopsis"
    return [(n, line) for n, line in first.lines if line.startswith("opsctl")]


def documented() -> dict[tuple[str, ...], tuple[list[str], set[str]]]:
    """What the synopsis says of each command: its arguments (the capitalised words before its
    first option) and the names of the options on its lines (`-o|--output FILE`: two)."""
    tree = registered()
    found: dict[tuple[str, ...], tuple[list[str], set[str]]] = {}
    for _, line in synopsis():
        for path, rest in resolve(line.split()[1:], tree):
            words = " ".join(rest).replace("[", " [").split()
            arguments = []
            for word in words:
                if not PLACEHOLDER.fullmatch(word):
                    break
                arguments.append(word)
            known = found.setdefault(path, (arguments, set()))
            known[1].update(OPTION.findall(" ".join(words)))
    return found


REGISTERED = registered()


@pytest.mark.parametrize("path", sorted(REGISTERED), ids=lambda p: " ".join(("opsctl", *p)))
def test_the_synopsis_names_every_registered_option_and_no_other(path: tuple[str, ...]) -> None:
    """docs/cli.md's synopsis line of each command lists its arguments and every option it
    registers, and no option it does not: drift either way (an option added to the code, or one
    documented but refused) fails here, naming it."""
    arguments, options = REGISTERED[path]
    lines = documented()
    assert path in lines, f"docs/cli.md's synopsis has no line for `opsctl {' '.join(path)}`"
    shown_arguments, shown_options = lines[path]
    assert sorted(options - shown_options) == [], "registered but not in the synopsis"
    assert sorted(shown_options - options) == [], "in the synopsis but not registered"
    assert shown_arguments == arguments


def test_the_synopsis_names_no_command_the_cli_lacks() -> None:
    """A synopsis line for a command that was removed or renamed would document nothing."""
    assert sorted(set(documented()) - set(REGISTERED)) == []


def opsctl_mentions() -> Iterator[tuple[str, str]]:
    """Every `opsctl ...` of the docs: inline code outside fences, and each opsctl command of the
    shell blocks (exempt ones included: they are not run, but their options can be checked)."""
    for path in DOC_FILES:
        doc = str(path.relative_to(ROOT))
        fenced = {n for b in BLOCKS if b.doc == doc for n in range(b.line, b.line + len(b.lines) + 2)}
        prose = "\n".join(
            line for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if n not in fenced
        )
        for span in re.findall(r"`([^`]+)`", prose):
            words = span.split()
            if words and words[0] == "opsctl":
                yield doc, " ".join(words)
    for command in COMMANDS:
        for match in IN_SHELL.finditer(split_comment(command.text.splitlines()[0])[0]):
            yield command.id, f"opsctl{match[1]}"


def test_every_documented_opsctl_command_exists_with_its_options() -> None:
    """Each `opsctl ...` the docs write anywhere names commands the CLI has and options those
    commands register (`--help` is everyone's), so an option cannot stay documented in prose after
    the code dropped it."""
    groups = {path[:i] for path in REGISTERED for i in range(len(path))}
    wrong = []
    mentions = list(opsctl_mentions())
    for where, text in mentions:
        for path, rest in resolve(text.split()[1:], REGISTERED):
            if path in groups and rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
                wrong.append(f"{where}: `{text}`: `opsctl {' '.join(path)}` has no command {rest[0]!r}")
                continue
            if path not in REGISTERED:  # a group without options of its own, named alone
                continue
            unknown = sorted(set(OPTION.findall(" ".join(rest))) - REGISTERED[path][1] - {"--help"})
            if unknown:
                wrong.append(f"{where}: `{text}`: `opsctl {' '.join(path)}` has no option {unknown}")
    assert len(mentions) > 30
    assert wrong == []


# --- the checks themselves can fail ---------------------------------------------------------

SAMPLE = """\
```console
$ echo hello
hello
$ x=1; false                   # exit 1
$ echo "$x"                    # set by the line above: one session
1
```

```sh
cat > notes.txt <<'EOF'
# a heredoc line, not a comment
EOF
test -s notes.txt \\
  && echo ok    # the continuation is one command
```

```
an unlabelled fence
```

```text
$ opsctl validate hidden.yaml
```
"""


def test_a_wrong_exit_code_wrong_output_or_hidden_line_is_caught(tmp_path: Path) -> None:
    """The machinery on a sample: right lines pass; a wrong exit code, wrong output and shell
    lines hidden from the runner are each caught, so a green run means the docs ran."""
    _, commands, problems = parse("sample.md", SAMPLE)
    assert [(c.line, c.expect_exit, c.output) for c in commands] == [
        (2, 0, ("hello",)),
        (4, 1, None),
        (5, 0, ("1",)),
        (10, 0, None),
        (13, 0, None),
    ]
    assert problems == [
        "sample.md:17: a fence with no language: name one of "
        "('sh', 'console', 'yaml', 'json', 'dockerfile', 'text')",
        "sample.md:22: a `$ ` prompt in a text block: a shell session belongs in a console block",
    ]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    results = run_session(commands, tmp_path, env, tmp_path / "session", 60)
    assert [mismatch(c, results[c.line]) for c in commands] == [None] * 5

    broken = parse("sample.md", SAMPLE.replace("echo hello", "echo goodbye").replace("# exit 1", "# exit 3"))[
        1
    ]
    results = run_session(broken, tmp_path, env, tmp_path / "broken", 60)
    found = [mismatch(c, results[c.line]) or "" for c in broken]
    assert "printed other lines than the docs show" in found[0] and "goodbye" in found[0]
    assert "sample.md:4: `x=1; false                   # exit 3` exited 1; the docs expect 3" in found[1]
    assert found[2:] == ["", "", ""]
