"""Where a Slurm run lives, and its manifest.

A run is a directory under the settings' root, on a filesystem every node mounts:
`manifest.json` (the pipeline as launched, each step's arrays as soon as they are submitted, the
generation), `lists/<step>.txt`, the workers' markers under `state/`, each child's log under
`logs/<step>/<index>.log`, each attempt's exit record under `exits/` (job.py) and the batch
script `job.sh`. The manifest is replaced whole (a write to a temporary name, then a rename), by
the commands that change the run: launch, resume and kill. Reads never write.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from opsctl.limits import MAX_ARRAY_SIZE, MAX_INTEGER, STEP_NAME
from opsctl.run.ids import check_run_id
from opsctl.run.manifest import COMMON, read_manifest
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.shapes import Absent, Int, ListOf, MapOf, Text
from opsctl_contract.storage import LocalStore

if TYPE_CHECKING:
    from opsctl.records import SlurmManifest

MANIFEST = "manifest.json"
_JOB_ID = Text(re.compile(r"[0-9]+"))
_INDEX = Int(0, MAX_ARRAY_SIZE - 1)
_RANGES = Text(re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*"))  # as sbatch's --array takes them
# A Slurm run's manifest (records.py `SlurmManifest`).
SLURM_MANIFEST = {
    **COMMON,
    "generation": Int(1, MAX_INTEGER),
    "arrays": MapOf(ListOf({"job": _JOB_ID, "offset": _INDEX, "children": _RANGES}), keys=STEP_NAME),
    "earlier": ListOf(_JOB_ID),
    "submitted_at": MapOf(float, keys=STEP_NAME),
    "killed": Absent(float),
    "accounting": Absent(bool),
}


class SlurmRun:
    """One run's directory, and its manifest as last read or written by this process."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.run_id = check_run_id(run_id)
        self.path = root / run_id
        self._doc: SlurmManifest | None = None

    @property
    def state(self) -> LocalStore:
        return LocalStore(self.path / "state")

    @property
    def exits(self) -> LocalStore:
        return LocalStore(self.path / "exits")

    def log_path(self, step: str, index: int) -> Path:
        return self.path / "logs" / step / f"{index}.log"

    @property
    def doc(self) -> SlurmManifest:
        """The manifest, read once per process (launch, resume and kill write it anew)."""
        if self._doc is None:
            where = self.path / MANIFEST
            try:
                data = where.read_bytes()
            except FileNotFoundError:
                raise BadInput(f"run '{self.run_id}' not found in {self.path.parent}/") from None
            except OSError as e:
                raise OpsctlError(f"{where}: cannot read it: {e.strerror}") from None
            self._doc = cast("SlurmManifest", read_manifest(data, self.run_id, str(where), SLURM_MANIFEST))
        return self._doc

    def jobs(self, *, earlier: bool = True) -> list[str]:
        """The job ids of the run's arrays, and with `earlier` those a resume replaced: what a
        kill cancels and a sacct of the run asks for."""
        doc = self.doc
        current = [a["job"] for arrays in doc["arrays"].values() for a in arrays]
        return current + doc["earlier"] if earlier else current

    def save(self, doc: SlurmManifest) -> None:
        """Replace the manifest whole: a reader sees the old one or the new one."""
        where = self.path / MANIFEST
        staged = where.with_name(f".{MANIFEST}.{os.getpid()}")
        try:
            staged.write_text(json.dumps(doc, indent=2))
            staged.replace(where)
        except OSError as e:
            staged.unlink(missing_ok=True)
            raise OpsctlError(f"{where}: cannot write it: {e.strerror}") from None
        self._doc = doc

    def change(self, change: Callable[[SlurmManifest], None]) -> SlurmManifest:
        doc = self.doc
        change(doc)
        self.save(doc)
        return doc
