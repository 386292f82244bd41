"""Atomic file writes: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[io.IOBase]:
    """Opens a temporary file that replaces `path` only if the block succeeds.

    Args:
        path: Final file path; its folder is created when missing.
        mode: ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str, data: Any) -> None:
    """Atomically writes `data` as indented JSON."""
    with atomic_open(path) as f:
        json.dump(data, f, indent=1, sort_keys=False, default=_json_default)
        f.write("\n")


def read_json(path: str) -> Any:
    """Reads a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_npz(path: str, **arrays: np.ndarray) -> None:
    """Atomically writes arrays to an ``.npz`` file."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
