"""The graphene kirigami MD dataset (Hanakata et al., PRL 2018): table parsing and rendering.

The table has 18 whitespace-separated columns: 15 coarse cut-pattern bits (3x5,
row-major, 1 = intact, 0 = cut) then yield strain, toughness and yield stress.
Lines starting with ``#`` are comments. No TensorFlow here.
"""

from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np

from tfdarts.sources import DataError, Raw, hash_files

TABLE_NAME = "alldata_15G.dat"
TARGET_COLUMNS = {"yield_strain": 15, "toughness": 16, "yield_stress": 17}
NUM_COLUMNS = 18
GRID = (3, 5)  # coarse cells: i along the 30-pixel axis, j along the 80-pixel axis
BLOCK = (10, 16)  # fine pixels per coarse cell
CUT_ROWS = (4, 5, 6)  # block-local rows zeroed by a cut
IMAGE_SHAPE = (GRID[0] * BLOCK[0], GRID[1] * BLOCK[1], 1)


def find_table(data_dir: str) -> str:
    """Returns the table path given the file itself or the folder holding `TABLE_NAME`."""
    if not data_dir:
        raise DataError("graphene_kirigami needs data.data_dir=PATH, the folder with "
                        f"{TABLE_NAME} (or the file itself)")
    path = os.path.join(data_dir, TABLE_NAME) if os.path.isdir(data_dir) else data_dir
    if not os.path.isfile(path):
        raise DataError(f"{path} not found; set data.data_dir to the folder with {TABLE_NAME} "
                        "(or the file itself)")
    return path


def _parse_line(text: str, path: str, lineno: int) -> List[float]:
    """Parses one data line into 18 floats, naming the line on error."""
    parts = text.split()
    if len(parts) != NUM_COLUMNS:
        raise DataError(f"{path}:{lineno}: {len(parts)} columns, expected {NUM_COLUMNS} "
                        "(15 pattern bits + strain, toughness, stress); fix or remove the line")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise DataError(f"{path}:{lineno}: non-numeric value in {text.strip()[:60]!r}; "
                        "fix or remove the line") from None


def read_table(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Reads the kirigami table.

    Args:
        path: The ``.dat`` file.

    Returns:
        ``(table (N, 18) float64, line numbers (N,) int64)`` (1-based, for messages).

    Raises:
        DataError: Wrong column count, non-numeric or NaN values, bits not 0/1.
    """
    rows, lines = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, text in enumerate(f, 1):
                if text.strip() and not text.lstrip().startswith("#"):
                    rows.append(_parse_line(text, path, lineno))
                    lines.append(lineno)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not rows:
        raise DataError(f"{path}: no data rows; expected the {NUM_COLUMNS}-column kirigami table")
    table, linenos = np.asarray(rows, np.float64), np.asarray(lines, np.int64)
    _check_table(table, linenos, path)
    return table, linenos


def _check_table(table: np.ndarray, linenos: np.ndarray, path: str) -> None:
    """Rejects non-finite targets and pattern bits other than 0/1."""
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        raise DataError(f"{path}:{linenos[bad.argmax()]}: NaN or infinite value "
                        f"({bad.sum()} such rows); fix or remove them")
    bits = table[:, :15]
    bad = ((bits != 0) & (bits != 1)).any(axis=1)
    if bad.any():
        raise DataError(f"{path}:{linenos[bad.argmax()]}: pattern columns 0-14 must be 0 or 1")


def render(patterns: np.ndarray) -> np.ndarray:
    """Renders coarse cut patterns to the fine 30x80 image of the README.

    Each coarse cell (i, j) becomes a 10x16 block of ones; a cut (0) zeroes the
    block-local rows 4, 5, 6 across all 16 columns.

    Args:
        patterns: ``(N, 15)`` or ``(N, 3, 5)`` 0/1 values, row-major.

    Returns:
        ``(N, 30, 80, 1)`` float32 of 0/1.
    """
    p = np.asarray(patterns, np.float32).reshape(-1, *GRID)
    fine = np.ones((len(p), GRID[0], BLOCK[0], GRID[1], BLOCK[1]), np.float32)
    fine[:, :, list(CUT_ROWS), :, :] = p[:, :, None, :, None]
    return fine.reshape(len(p), *IMAGE_SHAPE)


def orbit_keys(patterns: np.ndarray) -> np.ndarray:
    """Canonical mirror-orbit key of each pattern.

    The key is the lexicographic minimum of the pattern and its row-flip,
    column-flip and double flip, encoded as a 15-bit integer (first bit most
    significant, so integer order equals lexicographic order).

    Args:
        patterns: ``(N, 15)`` or ``(N, 3, 5)`` 0/1 values.

    Returns:
        ``(N,)`` int64 keys; mirror images share a key.
    """
    p = np.asarray(patterns).reshape(-1, *GRID).astype(np.int64)
    weights = (1 << np.arange(14, -1, -1, dtype=np.int64)).reshape(GRID)
    variants = (p, p[:, ::-1, :], p[:, :, ::-1], p[:, ::-1, ::-1])
    return np.min([(v * weights).sum(axis=(1, 2)) for v in variants], axis=0)


def load(data_dir: str, target: str) -> Raw:
    """Loads the whole table as one training pool (split later) with orbit groups.

    Args:
        data_dir: Folder with `TABLE_NAME`, or the table file.
        target: One of `TARGET_COLUMNS`.

    Returns:
        A `Raw` with ``x (N, 30, 80, 1)`` float32, ``y (N, 1)`` float32 raw
        target units, no test split and ``groups`` = `orbit_keys`.
    """
    if target not in TARGET_COLUMNS:
        raise DataError(f"data.target={target!r} is not a kirigami target; use one of "
                        f"{', '.join(TARGET_COLUMNS)}")
    path = find_table(data_dir)
    table, _ = read_table(path)
    patterns = table[:, :15]
    y = table[:, TARGET_COLUMNS[target]].astype(np.float32)[:, None]
    return Raw(render(patterns), y, None, None, os.path.abspath(path), hash_files([path]),
               (target,), groups=orbit_keys(patterns))
