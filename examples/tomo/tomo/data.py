"""Where the pipeline's arrays live (under OPSCTL_RUN_URI, through opsctl_contract.storage) and its settings.

Settings come from the environment (the pipeline file sets them); the true centre-of-rotation
offset is read by `acquire` only, and the later steps learn the geometry from scan.json.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from opsctl_contract.storage import Store, open_store


def store() -> Store:
    uri = os.environ.get("OPSCTL_RUN_URI")
    if not uri:
        raise SystemExit("tomo: OPSCTL_RUN_URI is not set (opsctl sets it for every command)")
    return open_store(f"{uri.rstrip('/')}/tomo")


def save_array(key: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    store().write(key, buffer.getvalue())


def load_array(key: str) -> np.ndarray:
    array: np.ndarray = np.load(io.BytesIO(store().read(key)), allow_pickle=False)
    return array


def save_json(key: str, value: dict[str, Any]) -> None:
    store().write(key, json.dumps(value, indent=2, sort_keys=True).encode())


def load_json(key: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(store().read(key))
    return value


def _env_int(name: str, default: int, low: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"tomo: {name}={raw!r} is not an integer") from None
    if value < low:
        raise SystemExit(f"tomo: {name}={value} must be >= {low}")
    return value


@dataclass(frozen=True)
class Scan:
    """The acquisition geometry every step shares (not the centre offset: that is the unknown)."""

    slices: int
    size: int  # detector pixels = image pixels per side
    angles: int  # projections over [0, 180) degrees; one more at 180 for calibration

    @classmethod
    def from_environ(cls) -> Scan:
        return cls(
            slices=_env_int("TOMO_SLICES", 32, 1),
            size=_env_int("TOMO_SIZE", 256, 16),
            angles=_env_int("TOMO_ANGLES", 256, 8),
        )

    @classmethod
    def recorded(cls) -> Scan:
        return cls(**load_json("scan.json"))

    def theta(self) -> np.ndarray:
        return np.arange(self.angles) * (np.pi / self.angles)


def slice_key(folder: str, index: int) -> str:
    return f"{folder}/{index:04d}.npy"
