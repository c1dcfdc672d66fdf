"""The object store, on a local directory and on S3 (moto over HTTP)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from opsctl_contract.errors import BadInput
from opsctl_contract.storage import STAGING, LocalStore, NotFound, S3Store, Store, open_store, read_uri
from tests.conftest import released_together


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "state")
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket}/runs/r1"


def test_ranged_reads_and_bounded_listings(store_uri: str) -> None:
    """What a child's start is built on: part of an object, and the keys of a name range."""
    store = open_store(store_uri)
    store.write("pack", b"0123456789")
    assert store.read_range("pack", 2, 5) == b"234"
    assert store.read_range("pack", 8, 1 << 40) == b"89", "a range past the end stops there"
    assert store.read_range("pack", 12, 20) == b""
    with pytest.raises(NotFound):
        store.read_range("absent", 0, 4)
    for k in (1, 5, 9, 10, 11, 20):
        store.write(f"s/done/{k:09d}", b"")
    between = store.list("s/done", after=f"{4:09d}", upto=f"{11:09d}")
    assert between == [f"s/done/{k:09d}" for k in (5, 9, 10, 11)]
    assert store.list("s/done", upto=f"{5:09d}") == [f"s/done/{k:09d}" for k in (1, 5)]


def test_write_read_exists_list(store_uri: str) -> None:
    store = open_store(store_uri)
    assert not store.exists("a/done/1")
    assert store.list("a") == []
    store.write("a/done/1", b"one")
    store.write("a/done/10", b"ten")
    store.write("a/failed/2", b"two")
    store.write("b/done/1", b"other step")
    assert store.read("a/done/1") == b"one"
    assert store.exists("a/done/1")
    assert store.list("a/done") == ["a/done/1", "a/done/10"]
    assert store.list("a") == ["a/done/1", "a/done/10", "a/failed/2"]
    assert len(store.list()) == 4
    store.write("a/done/1", b"replaced")
    assert store.read("a/done/1") == b"replaced"


def test_read_missing_is_not_found(store_uri: str) -> None:
    with pytest.raises(NotFound) as e:
        open_store(store_uri).read("nope/3")
    assert "nope/3" in str(e.value)


def test_create_if_absent(store_uri: str) -> None:
    store = open_store(store_uri)
    assert store.create("claims/7", b"first")
    assert not store.create("claims/7", b"second")
    assert store.read("claims/7") == b"first"


def test_uri_forms(tmp_path: Path, bucket: str) -> None:
    (tmp_path / "list.txt").write_text("echo hi\n")
    assert read_uri(str(tmp_path / "list.txt")) == b"echo hi\n"
    assert read_uri(f"file://{tmp_path}/list.txt") == b"echo hi\n"
    S3Store(bucket, "x/y").write("list.txt", b"echo s3\n")
    assert read_uri(f"s3://{bucket}/x/y/list.txt") == b"echo s3\n"
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    with pytest.raises(BadInput):
        read_uri(f"s3://{bucket}")
    with pytest.raises(BadInput, match="bucket does not exist"):
        read_uri("s3://no-such-bucket-opsctl/list.txt")


def test_local_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("k/1", b"x")
    store.create("k/2", b"y")
    store.create("k/2", b"z")
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["1", "2"]


def _race(uri: str, keys: int, contenders: int) -> list[list[int]]:
    """Processes that all try to create the same keys, released together once all are ready."""
    code = (
        "import json, random, sys\n"
        "from opsctl_contract.storage import open_store\n"
        "uri, keys, me = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
        "store = open_store(uri)\n"
        "store.exists('warm-up')  # connect (and import boto3) before the race\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "order = list(range(keys))\n"
        "random.Random(me).shuffle(order)  # each contender meets the others at different keys\n"
        "print(json.dumps([k for k in order if store.create(f'claims/{k}', me.encode())]))\n"
    )
    argvs = [[sys.executable, "-c", code, uri, str(keys), str(i)] for i in range(contenders)]
    return [json.loads(out) for out in released_together(argvs, timeout=120)]


def test_create_is_atomic_under_8_processes(store_uri: str) -> None:
    keys = 100 if store_uri.startswith("s3://") else 500
    wins = _race(store_uri, keys, contenders=8)
    counts = Counter(k for won in wins for k in won)
    assert sorted(counts) == list(range(keys)), "every key created"
    assert set(counts.values()) == {1}, "no key created twice"
    store: Store = open_store(store_uri)
    # The stored content is the winner's, whole.
    for contender, won in enumerate(wins):
        for k in won[:20]:
            assert store.read(f"claims/{k}") == str(contender).encode()
    assert sum(1 for won in wins if won) > 1, "the contenders really raced"


def test_local_writes_are_staged_by_writer_and_swept_by_who_is_gone(tmp_path: Path) -> None:
    """A staged file sits in `.opsctl-staging/`, named by its writer, never among the keys."""
    alive, dead = LocalStore(tmp_path, writer="s.0.2"), LocalStore(tmp_path, writer="s.1.1")
    alive.write("s/done/000000001", b"{}")
    staging = tmp_path / STAGING
    for writer in ("s.0.1", "s.1.1", "s.0.2"):  # as writers killed between staging and rename
        (staging / f"{writer}-{'0' * 32}").write_bytes(b"x" * 10)
    assert alive.list() == ["s/done/000000001"], "staged files are not keys"
    assert alive.sweep(lambda w: w in {"s.0.1", "s.1.1"}) == (2, 20)
    assert sorted(p.name for p in staging.iterdir()) == [f"s.0.2-{'0' * 32}"]
    assert dead.create("s/claims/1/0/0", b"{}") and not dead.create("s/claims/1/0/0", b"{}")
    assert sorted(p.name for p in staging.iterdir()) == [f"s.0.2-{'0' * 32}"], "create cleans up"


def test_a_local_store_is_owner_only_unless_its_folder_is_shared_by_group(tmp_path: Path) -> None:
    """Private by default; in a setgid folder (a run shared with its containers' user, or a
    group's project folder) what it creates is for the owner and that group, whatever the umask."""

    def modes(root: Path) -> tuple[int, int, int]:
        store = LocalStore(root)
        store.write("step/done/000000000", b"{}")
        assert store.create("step/claims/0", b"")
        return tuple(  # type: ignore[return-value]
            (root / key).stat().st_mode & 0o7777 for key in ("step/done", "step/done/000000000", STAGING)
        )

    private = tmp_path / "private"
    private.mkdir()
    assert modes(private) == (0o700, 0o600, 0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2770)
    assert modes(shared / "state") == (0o2770, 0o640, 0o2770), "made below a shared folder: shared"
