"""The pipeline spec: YAML in, frozen and validated objects out, steps in dependency order.

Pure: the only I/O is reading the spec and the list files it names. Every problem becomes a
`SpecError` that names the file, the line, the offending value and the limit it broke, so that
a user fixes the spec before anything is submitted anywhere.

This module is the spec's entry points (`load`, `parse`), and the face of its model (`Step`,
`Pipeline`, the limits and defaults a spec is held to: opsctl/spec_model.py), re-exported here
as `pipeline.Step` and so on. Reading the YAML with line numbers and within bounds is
opsctl/spec_yaml.py's; checking the document and building the model, opsctl/spec_check.py's.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from opsctl.errors import SpecError

# Re-exported: callers read the name rule and the YAML bound as the spec's (pipeline.PIPELINE_NAME).
from opsctl.limits import PIPELINE_NAME as PIPELINE_NAME
from opsctl.spec_check import _Validator
from opsctl.spec_model import DEFAULT_RETRIES as DEFAULT_RETRIES
from opsctl.spec_model import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from opsctl.spec_model import IMAGE as IMAGE
from opsctl.spec_model import MAX_IMAGE as MAX_IMAGE
from opsctl.spec_model import MAX_TEMPLATE_RANGE as MAX_TEMPLATE_RANGE
from opsctl.spec_model import RESERVED_ENV as RESERVED_ENV
from opsctl.spec_model import STORAGE_REFUSED as STORAGE_REFUSED
from opsctl.spec_model import Dependency as Dependency
from opsctl.spec_model import Pipeline as Pipeline
from opsctl.spec_model import Queue as Queue
from opsctl.spec_model import Split as Split
from opsctl.spec_model import Step as Step
from opsctl.spec_yaml import MAX_YAML_NODES as MAX_YAML_NODES
from opsctl.spec_yaml import _At, _load_yaml
from opsctl_contract.files import SPEC_LIMIT, Unreadable, read_text


def load(path: str | Path) -> Pipeline:
    """Read and validate a pipeline spec; raise `SpecError` on the first problem."""
    spec_path = Path(path)
    shown = str(path)
    try:
        text = read_text(spec_path, SPEC_LIMIT, "spec file")
    except Unreadable as e:
        raise SpecError(e.reason, shown) from None
    return parse(text, shown, spec_path.parent)


def parse(text: str, source: str, base_dir: Path) -> Pipeline:
    """Validate spec text; list files are resolved against `base_dir`."""
    try:
        document = _load_yaml(text)
    except _At as e:
        raise SpecError(e.message, source, e.line) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(f"invalid YAML: {e.problem or e.context}", source, line) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as e:
        # Explicit tags such as `!!float abc` fail in the constructor with no YAML mark.
        raise SpecError(f"invalid YAML: {e}", source) from None
    try:
        return _Validator(source, base_dir).pipeline(document)
    except _At as e:
        raise SpecError(e.message, source, e.line) from None
