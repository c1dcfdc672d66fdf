"""One small object-store interface over a local directory and S3.

Markers, claims, list files and run manifests all go through here, so the worker and the
backends never care where a run keeps its state. This is the only module that calls S3.

URIs: a plain path, `file://PATH`, or `s3://bucket/prefix`. Keys are relative, `/`-separated.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import stat
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.files import LIST_FILE_LIMIT, Unreadable, read_file

if TYPE_CHECKING:  # boto3 is imported lazily: `opsctl --help` and local runs never load it
    from collections.abc import Iterator

# The largest object read whole: a list file of 10^6 commands (markers and manifests are small).
MAX_OBJECT = LIST_FILE_LIMIT


@dataclass
class Usage:
    """What stores did, counted where it happens, for whoever made them: a worker writes its
    figures into its ledger, a launch records what it cost. Stores that share one add up.

    `requests` by S3's price classes: "put" (PUT, COPY, POST, LIST: $0.005 per 1,000 in S3
    Standard), "get" (GET, HEAD and the rest: $0.0004 per 1,000), "delete" (free). A local
    store counts the same operations, so both backends report a run's requests alike.
    `read_bytes`: bytes of object data downloaded."""

    requests: Counter[str] = field(default_factory=Counter)
    read_bytes: int = 0


# The Usage of the S3Store whose call is in flight, for the client's request hook (`s3_client`):
# one client serves every store of a process, and each call counts to its own store's Usage.
_IN_FLIGHT: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("opsctl_s3_usage", default=None)
PRICE_PER_1000 = {"put": 0.005, "get": 0.0004, "delete": 0.0}
_S3_CLASS = {"PutObject": "put", "ListObjectsV2": "put", "CopyObject": "put", "DeleteObject": "delete"}


def request_cost(counts: Mapping[str, int]) -> float:
    """Dollars at S3 Standard's published request prices (us-east-1)."""
    return sum(counts.get(kind, 0) * price / 1000 for kind, price in PRICE_PER_1000.items())


class NotFound(OpsctlError):
    """The object does not exist."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri}: not found")
        self.uri = uri


class Store(Protocol):
    """What every backend of the store offers; `create` is the only atomic primitive we need."""

    uri: str
    usage: Usage  # what this store's calls cost (shared with the other stores of its maker)

    def read(self, key: str) -> bytes:
        """The object's bytes; `NotFound` when absent."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Replace the object whole: readers see the old or the new bytes, never a mix."""
        ...

    def exists(self, key: str) -> bool: ...

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the object (fewer at its end); `NotFound` when absent.

        A child reads its own share of a step's work this way, not the whole of it."""
        ...

    def list(self, folder: str = "", *, after: str = "", upto: str = "") -> list[str]:
        """Keys under `folder/` (recursively), relative to the store, sorted; with `after` /
        `upto`, only those whose name below `folder/` sorts after `after` and not after `upto`.

        On S3 a bounded listing starts at `after` (StartAfter) and stops paging past `upto`, so
        it costs a request per 1,000 keys *in the range*, not in the folder."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; absent already is fine."""
        ...

    def create(self, key: str, data: bytes) -> bool:
        """Create the object only if absent, atomically; True if this call created it.

        Of any number of concurrent callers, exactly one gets True. This is how dynamic-split
        children claim commands without a coordinator.
        """
        ...

    def sweep(self, stale: Callable[[str], bool] = ...) -> tuple[int, int]:
        """Remove what writers that `stale` names left staged: (files, bytes)."""
        ...


def open_store(uri: str, writer: str | None = None, usage: Usage | None = None) -> Store:
    """The store rooted at `uri`; `writer` names who stages local writes (LocalStore); its
    calls are counted in `usage` (a new one where None)."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise BadInput(f"{uri}: an s3:// URI needs a bucket name")
        return S3Store(bucket, prefix.strip("/"), usage)
    return LocalStore(Path(uri.removeprefix("file://")), writer, usage)


def read_uri(uri: str, usage: Usage | None = None) -> bytes:
    """Read one object given by its full URI (a list file, say), counted in `usage`."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise BadInput(f"{uri}: names a bucket or folder, not an object")
        return S3Store(bucket, usage=usage).read(key)
    path = Path(uri.removeprefix("file://"))
    return LocalStore(path.parent, usage=usage).read(path.name)


def _bounded(keys: list[str], prefix: str, after: str, upto: str) -> list[str]:
    """`keys` (sorted, each starting with `prefix`) whose name after `prefix` is in (after, upto]."""
    if after:
        keys = [k for k in keys if k[len(prefix) :] > after]
    if upto:
        keys = [k for k in keys if k[len(prefix) :] <= upto]
    return keys


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


# --- local directory --------------------------------------------------------------------------


STAGING = ".opsctl-staging"  # a local store's folder of files being written


class LocalStore:
    """A directory on this machine; writes are atomic through rename and hard link.

    Each write is staged in `<root>/.opsctl-staging/<writer>-<random>` and then renamed (or
    linked) into place, so a writer killed in between leaves its file there, named by the
    writer, and never among the markers. `writer` says who: a worker names its step, child and
    attempt (`sweep` then finds what an earlier attempt left); anyone else is `pid<N>`.
    """

    def __init__(self, root: Path, writer: str | None = None, usage: Usage | None = None) -> None:
        self.root = root
        self.uri = str(root)
        self.usage = usage if usage is not None else Usage()
        self.writer = writer or f"pid{os.getpid()}"
        self._staging = os.path.join(str(root), STAGING)
        # Owner only, unless the root is a group-shared folder (setgid): there the run's user
        # and a container's user share it by group (`launch --containers`, docs/worker.md).
        self._shared = _shared(self.uri)
        self._file_mode = 0o640 if self._shared else 0o600

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes:
        self.usage.requests["get"] += 1
        path = self._path(key)
        if not path.is_file():  # follows links; FIFOs, devices and folders are not objects
            if path.exists():
                raise BadInput(f"{path}: not a regular file")
            raise NotFound(str(path))
        try:
            data = read_file(path, MAX_OBJECT)
            self.usage.read_bytes += len(data)
            return data
        except Unreadable as e:
            if not path.exists():  # removed between the check and the read
                raise NotFound(str(path)) from None
            raise BadInput(str(e)) from None

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        self.usage.requests["get"] += 1
        path = self._path(key)
        if not path.is_file():
            if path.exists():
                raise BadInput(f"{path}: not a regular file")
            raise NotFound(str(path))
        try:
            with open(path, "rb") as f:
                stop = min(stop, os.fstat(f.fileno()).st_size)
                f.seek(start)
                data = f.read(max(stop - start, 0))
                self.usage.read_bytes += len(data)
                return data
        except FileNotFoundError:
            raise NotFound(str(path)) from None
        except OSError as e:
            raise BadInput(f"{path}: cannot read: {e.strerror}") from None

    def exists(self, key: str) -> bool:
        self.usage.requests["get"] += 1
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self.usage.requests["delete"] += 1
        _unlink(os.path.join(self.root, key))

    def write(self, key: str, data: bytes) -> None:
        self.usage.requests["put"] += 1
        path = os.path.join(self.root, key)
        with _writing(path):
            tmp = self._stage(path, data)
            try:
                _into_place(os.replace, tmp, path, self._shared)
            except BaseException:
                _unlink(tmp)
                raise

    def create(self, key: str, data: bytes) -> bool:
        # link(2) fails with EEXIST exactly like open(O_CREAT | O_EXCL), and the object appears
        # with its full content: nobody can read a claim or marker half written.
        self.usage.requests["put"] += 1
        path = os.path.join(self.root, key)
        with _writing(path):
            tmp = self._stage(path, data)
            try:
                _into_place(os.link, tmp, path, self._shared)
            except FileExistsError:
                return False
            finally:
                _unlink(tmp)
        return True

    def list(self, folder: str = "", *, after: str = "", upto: str = "") -> list[str]:
        # os.scandir on plain strings: status polls list 10,000s of markers, and pathlib
        # objects per entry cost ten times as much.
        self.usage.requests["put"] += 1  # a LIST, in S3's terms
        keys: list[str] = []
        root = folder.strip("/")
        pending = [root] if root else [""]
        while pending:
            prefix = pending.pop()
            try:
                entries = os.scandir(os.path.join(self.root, prefix))
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    key = f"{prefix}/{entry.name}" if prefix else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        if key != STAGING:
                            pending.append(key)
                    elif not entry.name.startswith(".opsctl-tmp-"):  # staged by opsctl < 0.5
                        keys.append(key)
        return _bounded(sorted(keys), f"{root}/" if root else "", after, upto)

    def _stage(self, path: str, data: bytes) -> str:
        """A staged file holding `data`, in the store's staging folder (the same file system as
        `path`), for an atomic rename or link there.

        Plain `os` calls on strings: the worker writes one marker per command, and this is on
        that path. The folders are created only when the first attempt finds them missing.
        """
        tmp = os.path.join(self._staging, f"{self.writer}-{uuid.uuid4().hex}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        # Owner only (or owner and group, shared), whatever the umask: another user must not
        # read a run's state or plant a marker in it (the umask can only take bits away).
        try:
            fd = os.open(tmp, flags, self._file_mode)
        except FileNotFoundError:
            private_dirs(self._staging, shared=self._shared)
            fd = os.open(tmp, flags, self._file_mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def sweep(self, stale: Callable[[str], bool] = lambda _writer: True) -> tuple[int, int]:
        """Remove the staged files whose writer `stale` says is gone: (files, bytes) removed.

        Only the caller knows who is gone (a retried worker its earlier attempts; `resume` and
        `prune` everyone, once the run's processes have stopped)."""
        removed = size = 0
        try:
            entries = list(os.scandir(self._staging))
        except (FileNotFoundError, NotADirectoryError):
            return 0, 0
        for entry in entries:
            writer = entry.name.rsplit("-", 1)[0]
            if entry.is_file(follow_symlinks=False) and stale(writer):
                with contextlib.suppress(OSError):
                    length = entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                    removed, size = removed + 1, size + length
        return removed, size


def _into_place(move: Callable[[str, str], None], tmp: str, path: str, shared: bool) -> None:
    """`move` (rename or link) a staged file to `path`, creating its folder the first time."""
    try:
        move(tmp, path)
    except FileNotFoundError:
        private_dirs(os.path.dirname(path), shared=shared)
        move(tmp, path)


def private_dirs(path: str | Path, *, shared: bool = False) -> None:
    """`path` and every missing folder above it, each created 0700 (os.makedirs gives the mode
    to the last one only); `shared`: 2770, group-shared like the folder they are made in."""
    missing = []
    folder = os.fspath(path)
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
            if shared:  # mkdir's mode passes through the umask, which takes the group's write
                os.chmod(folder, SHARED_DIR)


SHARED_DIR = 0o2770  # setgid: what is made inside keeps the folder's group


def _shared(root: str) -> bool:
    """Whether `root`, or the nearest folder above it that exists, is group-shared (setgid)."""
    folder = root
    while folder:
        try:
            return bool(os.stat(folder).st_mode & stat.S_ISGID)
        except FileNotFoundError:
            parent = os.path.dirname(folder)
            folder = "" if parent == folder else parent
        except OSError:
            return False
    return False


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    """A failed local write (a full disk, a read-only or missing folder) as one line, exit 1."""
    try:
        yield
    except OSError as e:
        raise OpsctlError(f"{path}: cannot write: {e.strerror}") from None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --- S3 ---------------------------------------------------------------------------------------


class _Conflict(Exception):
    """A conditional PutObject did not apply: S3's PreconditionFailed (412) or 409 conflict."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@functools.cache
def s3_client() -> Any:
    """One S3 client per process; honours AWS_ENDPOINT_URL (how tests reach moto)."""
    from opsctl_contract.awsclient import client

    s3 = client("s3")

    def count(model: Any, **_: Any) -> None:
        usage = _IN_FLIGHT.get()
        if usage is not None:  # every call of opsctl's is made inside `S3Store._errors`
            usage.requests[_S3_CLASS.get(model.name, "get")] += 1

    s3.meta.events.register("before-call.s3", count)
    return s3


class S3Store:
    """A bucket and prefix; conditional PutObject gives create-if-absent."""

    def __init__(self, bucket: str, prefix: str = "", usage: Usage | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.uri = f"s3://{_join(bucket, prefix)}"
        self.usage = usage if usage is not None else Usage()

    def _key(self, key: str) -> str:
        return _join(self.prefix, key)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """S3's answers as our errors: a missing key is `NotFound`, the rest as `aws_call` says."""
        from botocore.exceptions import ClientError

        from opsctl_contract.awsclient import aws_call, error_code

        where = f"s3://{self.bucket}/{self._key(key)}"
        counting = _IN_FLIGHT.set(self.usage)
        with aws_call("S3", where):
            try:
                yield
            except ClientError as e:
                code = error_code(e)
                if code in ("NoSuchKey", "404", "NotFound"):
                    raise NotFound(where) from None
                if code == "NoSuchBucket":
                    raise BadInput(f"s3://{self.bucket}: bucket does not exist") from None
                if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise _Conflict(code) from None
                raise
            finally:
                _IN_FLIGHT.reset(counting)

    def read(self, key: str) -> bytes:
        with self._errors(key):
            response = s3_client().get_object(Bucket=self.bucket, Key=self._key(key))
            if response["ContentLength"] > MAX_OBJECT:
                response["Body"].close()
                raise BadInput(
                    f"s3://{self.bucket}/{self._key(key)}: {response['ContentLength']} bytes, "
                    f"over the {MAX_OBJECT} bytes opsctl reads whole"
                )
            body: bytes = response["Body"].read()
            self.usage.read_bytes += len(body)
            return body

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        if stop <= start:
            return b""
        from botocore.exceptions import ClientError

        from opsctl_contract.awsclient import error_code

        with self._errors(key):
            try:
                response = s3_client().get_object(
                    Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{stop - 1}"
                )
            except ClientError as e:
                if error_code(e) == "InvalidRange":  # starts past the end: S3's 416
                    return b""
                raise
            body: bytes = response["Body"].read()
            self.usage.read_bytes += len(body)
            return body

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                s3_client().head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFound:
            return False
        return True

    def write(self, key: str, data: bytes) -> None:
        with self._errors(key):
            s3_client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def delete(self, key: str) -> None:
        with self._errors(key):
            s3_client().delete_object(Bucket=self.bucket, Key=self._key(key))

    def create(self, key: str, data: bytes) -> bool:
        return self.create_tagged(key, data) is not None

    def sweep(self, stale: Callable[[str], bool] = lambda _writer: True) -> tuple[int, int]:
        """Nothing to sweep: an S3 write is one request, never staged."""
        return 0, 0

    def create_tagged(self, key: str, data: bytes) -> str | None:
        """`create`, returning the new object's ETag (None if it existed), for a later `replace`."""
        return self._put_if(key, data, IfNoneMatch="*")

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its ETag, for a later `replace`."""
        with self._errors(key):
            response = s3_client().get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), str(response["ETag"])

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Write the object only if it still has `etag`; its new ETag, or None if it changed.

        Optimistic concurrency for an object several processes update (the AWS run manifest):
        a writer that lost re-reads and applies its change again instead of undoing another's.
        """
        return self._put_if(key, data, IfMatch=etag)

    def _put_if(self, key: str, data: bytes, **condition: str) -> str | None:
        """A conditional PutObject: the new ETag, or None when the condition did not hold."""
        for attempt in range(8):
            try:
                with self._errors(key):
                    response = s3_client().put_object(
                        Bucket=self.bucket, Key=self._key(key), Body=data, **condition
                    )
                return str(response["ETag"])
            except _Conflict as e:
                if e.code == "PreconditionFailed":
                    return None
                # S3 answers 409 while another conditional write of the key is in flight;
                # the documented remedy is to retry, which then settles the race with a 412.
                time.sleep(0.05 * 2**attempt)
        raise OpsctlError(f"s3://{self.bucket}/{self._key(key)}: conditional write kept conflicting")

    def folders(self, folder: str = "") -> list[str]:
        """The names of the folders directly under `folder`: a delimiter listing, a request per
        1,000 folders, whatever they hold."""
        prefix = self._key(folder)
        prefix = f"{prefix}/" if prefix else ""
        names: list[str] = []
        with self._errors(folder):
            pages = (
                s3_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            )
            for page in pages:
                names.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        return sorted(names)

    def list(self, folder: str = "", *, after: str = "", upto: str = "") -> list[str]:
        prefix = self._key(folder)
        prefix = f"{prefix}/" if prefix else ""
        keys: list[str] = []
        start = {"StartAfter": prefix + after} if after else {}
        with self._errors(folder):
            pages = (
                s3_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=prefix, **start)
            )
            for page in pages:  # in key order: stop asking for pages once past `upto`
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
                if upto and keys and keys[-1][len(prefix) :] > upto:
                    break
        strip = len(self.prefix) + 1 if self.prefix else 0
        return [key[strip:] for key in _bounded(sorted(keys), prefix, after, upto)]
