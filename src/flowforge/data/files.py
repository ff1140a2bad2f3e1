"""A user's own tabular data: ``.csv`` (optional header row) or ``.npy`` of shape (N, D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowforge.atomic import atomic_target
from flowforge.errors import FlowforgeError


def _read_csv(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    if not first.strip():
        raise FlowforgeError(f"{path}: the file holds no rows")
    try:  # a first line that is not numbers is a header
        [float(v) for v in first.split(",")]
        header = 0
    except ValueError:
        header = 1
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=header, dtype=np.float64)
    except ValueError as err:
        raise FlowforgeError(f"{path}: not a numeric CSV table ({str(err).splitlines()[0]})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise FlowforgeError(f"{path}: not a plain numeric .npy array ({err})") from None
    if not np.issubdtype(array.dtype, np.number):
        raise FlowforgeError(f"{path}: holds {array.dtype} values, expected numbers")
    return array


def read_table(path: str | Path) -> np.ndarray:
    """Read and validate an (N, D) table of finite numbers; errors name the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise FlowforgeError(f"{path}: no such file")
    if path.suffix.lower() not in (".csv", ".npy"):
        raise FlowforgeError(f"{path}: unsupported file type {path.suffix or '(none)'}; use .csv or .npy")
    try:
        array = _read_csv(path) if path.suffix.lower() == ".csv" else _read_npy(path)
    except OSError as err:
        raise FlowforgeError(f"{path}: cannot be read ({err.strerror or err})") from None
    if array.ndim != 2:
        raise FlowforgeError(f"{path}: expected a 2-D table (N rows, D columns), got shape {array.shape}")
    if array.shape[0] == 0:
        raise FlowforgeError(f"{path}: the file holds no rows")
    bad = ~np.isfinite(array)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise FlowforgeError(f"{path}: non-finite value {array[row, col]} at row {row + 1}, column {col + 1}")
    return array.astype(np.float32)


def write_table(path: str | Path, array: np.ndarray, header: str | None = None) -> None:
    """Write ``array`` as .csv or .npy (by suffix), atomically: a crash leaves no half file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npy"):
        raise FlowforgeError(f"{path}: unsupported output type {suffix or '(none)'}; use .csv or .npy")
    try:
        with atomic_target(path) as tmp, open(tmp, "wb") as fh:
            if suffix == ".npy":
                np.save(fh, array)
            else:
                np.savetxt(fh, array, delimiter=",", fmt="%.8g", header=header or "", comments="")
    except OSError as err:
        raise FlowforgeError(f"{path}: cannot be written ({err.strerror or err})") from None
