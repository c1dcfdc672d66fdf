"""`opsctl-worker`: the container entry point.

argparse rather than Typer: the worker runs once per array child, in a slim image, and needs
only two sub-commands; it starts faster without rich and click.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator

import structlog

from opsctl_contract import logging as opsctl_logging
from opsctl_contract import subreaper
from opsctl_contract.environment import SCRATCH_DIR
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.listfile import parse_commands
from opsctl_contract.markers import DONE, Ledger, Markers
from opsctl_contract.storage import NotFound, Store, Usage, open_store, read_uri
from opsctl_contract.work import Command, InMemory, Pack
from worker.claims import Claims
from worker.env import WorkerEnv
from worker.runner import Terminated, raise_terminated, run_commands


def run(fail_fast: bool, preflight_gpu: bool = False) -> int:
    """Run this child's commands; the exit code follows the worker contract (0, 1 or 2)."""
    env = WorkerEnv.from_environ(os.environ)
    if preflight_gpu:
        from worker.gpucheck import check_apart

        report = check_apart(require_gpu=True)
        if not report.healthy:
            # Exit 1, not 2: a broken GPU host is worth another attempt elsewhere.
            print(report.render(), file=sys.stderr)
            return 1
    store = open_store(env.state_uri, writer=f"{env.step}.{env.index}.{env.attempt}")
    if env.attempt > 1:  # what an earlier attempt of this child was killed writing
        store.sweep(lambda writer: _earlier_attempt(writer, env))
    markers = Markers(store, env.step)
    ledger = Ledger(store, env.step, env.index, env.generation, env.attempt)
    try:
        return _run(env, store, markers, ledger, fail_fast)
    finally:
        with contextlib.suppress(OpsctlError):  # a full disk: the markers are the record
            ledger.save()


def _earlier_attempt(writer: str, env: WorkerEnv) -> bool:
    step, _, rest = writer.partition(".")
    index, _, attempt = rest.partition(".")
    return step == env.step and index == str(env.index) and attempt.isdigit() and int(attempt) < env.attempt


def _share(env: WorkerEnv, markers: Markers) -> tuple[Pack | InMemory, list[Command], set[int]]:
    """Where this child's shards come from, its own shard, and which of its commands are done.

    From the generation's work pack when there is one: two ranged reads, and no listing on a
    first attempt, since the pack holds only commands not done and this child alone runs its
    shard's (a dynamic child's retry finds its own in worker/claims.py). Without a pack, the
    list file read whole and the done markers listed whole.
    """
    pack = Pack(markers.store, env.step, env.generation)
    try:
        own = pack.shard(env.index)
    except NotFound:
        source = InMemory(_read_list(env, markers.store.usage), env.split, env.array_size)
        return source, source.shard(env.index), markers.indices(DONE)
    done: set[int] = set()
    if env.attempt > 1 and env.split == "contiguous" and own:
        done = markers.between(DONE, own[0].index, own[-1].index)
    return pack, own, done


def _read_list(env: WorkerEnv, usage: Usage) -> list[str]:
    """The list file read whole, its requests counted with the state store's (`usage`)."""
    try:
        text = read_uri(env.list_uri, usage).decode("utf-8")
    except NotFound:
        raise BadInput(f"environment: LIST_FILE_S3_PATH={env.list_uri!r}: list file not found") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"list file {env.list_uri}: not UTF-8 text (byte {e.start})") from None
    return parse_commands(text)


def _run(env: WorkerEnv, store: Store, markers: Markers, ledger: Ledger, fail_fast: bool) -> int:
    source, own, done = _share(env, markers)
    texts = {c.index: c.text for c in own}
    if env.split == "dynamic":
        mine: Iterable[int] = Claims(store, env, ledger, source, own, texts).commands()
    else:
        mine = [c.index for c in own]
    # Bound once here: every event of this child, the runner's included, carries them.
    structlog.contextvars.bind_contextvars(
        run_id=env.run_id, step=env.step, child=env.index, attempt=env.attempt
    )
    log = structlog.get_logger()
    first, last = (own[0].index, own[-1].index) if own else (None, None)
    log.info("shard", split=env.split, commands=len(own), first=first, last=last)
    with scratch(env) as where:
        summary = run_commands(
            env, texts, mine, markers, done=done, fail_fast=fail_fast, ledger=ledger, cwd=where
        )
    log.info("finished", ran=summary.ran, failed=summary.failed, skipped=summary.skipped)
    return summary.exit_code


@contextlib.contextmanager
def scratch(env: WorkerEnv) -> Iterator[str]:
    """The directory this attempt's commands start in: made empty in the temporary directory
    (tempfile's: $TMPDIR where usable, else /tmp) before the first command, removed with what
    is in it when the attempt ends, and named to them by OPSCTL_SCRATCH_DIR.

    One rule wherever the worker runs: in a container on AWS Batch or under `--containers`
    (whose /tmp is the container's own), on a local host, on a cluster node (where $TMPDIR is
    often the job's own). A command cannot count on the launch directory, which no container
    has, nor on the image's WORKDIR, which a host run has not; what must outlive the attempt
    goes under $OPSCTL_RUN_URI (docs/worker.md, "Where commands run")."""
    prefix = f"opsctl-{env.step}-{env.index}-{env.attempt}-"  # the step's name is checked: no "/"
    try:
        folder = tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True)
    except OSError as e:
        # Exit 1: another host may have room. tempfile names the places it tried.
        raise OpsctlError(f"cannot make the commands' scratch directory: {e}") from None
    with folder as where:
        os.environ[SCRATCH_DIR] = where
        try:
            yield where
        finally:
            os.environ.pop(SCRATCH_DIR, None)


def gpu_check(*, as_json: bool, require_gpu: bool) -> int:
    import json

    from worker.gpucheck import check_apart

    report = check_apart(require_gpu=require_gpu)
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
    return 0 if report.healthy else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="opsctl-worker", description="Run one array child of an opsctl step."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser(
        "run",
        help="run this child's commands from the list file (environment contract: docs/worker.md)",
    )
    run_parser.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop at the first failed command instead of running the rest of the slice",
    )
    run_parser.add_argument(
        "--preflight-gpu",
        action="store_true",
        help="run gpu-check --require-gpu first and exit 1 without running commands if it fails",
    )
    gpu_parser = sub.add_parser(
        "gpu-check",
        help="check OpenCL end to end (loader, vendor files, devices, a test kernel); exit 0 healthy, 1 not",
    )
    gpu_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    gpu_parser.add_argument(
        "--require-gpu", action="store_true", help="unhealthy unless a GPU device is present"
    )
    args = parser.parse_args(argv)

    if args.command == "gpu-check":
        sys.exit(gpu_check(as_json=args.json, require_gpu=args.require_gpu))

    opsctl_logging.configure()
    # What a command leaves running, however it detached, is re-parented here and ended when
    # the command ends (worker/runner.py).
    subreaper.become_subreaper()
    signal.signal(signal.SIGTERM, raise_terminated)
    signal.signal(signal.SIGINT, raise_terminated)
    try:
        code = run(args.fail_fast, args.preflight_gpu)
    except Terminated as e:
        print(f"opsctl-worker: stopped by {e}", file=sys.stderr)
        code = 128 + e.signum
    except OpsctlError as e:
        print(f"opsctl-worker: {e}", file=sys.stderr)
        code = e.exit_code
    sys.exit(code)
