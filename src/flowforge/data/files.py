"""A user's own tabular data: ``.csv`` (optional header row) or ``.npy`` of shape (N, D).

Tables are read in bounded memory: a CSV row longer than :data:`MAX_ROW_BYTES` is refused (a
binary or one-line file is not a table), rows are parsed :data:`CHUNK_ROWS` at a time, and a
``.npy`` is memory-mapped and converted chunk by chunk. Writers stream batches, so a table of
any length is written without holding it whole.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import numpy.lib.format as npy_format

from flowforge.atomic import atomic_target
from flowforge.errors import FlowforgeError

MAX_ROW_BYTES = 1 << 20  # one CSV row: 1 MiB, some 50,000 numbers
CHUNK_ROWS = 65_536
FLOAT32 = np.finfo(np.float32)


def file_sha256(path: str | Path) -> str | None:
    """The SHA-256 of a file's bytes; None when it cannot be read. What a run records of a user's
    file, to notice a change."""
    return files_sha256([Path(path)], named=False)


def files_sha256(files: list[Path], named: bool = True) -> str | None:
    """The SHA-256 of ``files``' bytes in turn (each preceded by its name when ``named``: a folder's
    files); None when one cannot be read."""
    digest = hashlib.sha256()
    try:
        for file in files:
            digest.update(file.name.encode() if named else b"")
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _rows(fh: BinaryIO, path: Path) -> Iterator[str]:
    """The file's lines, each refused if it is binary or longer than :data:`MAX_ROW_BYTES`."""
    number = 0
    while line := fh.readline(MAX_ROW_BYTES + 1):
        number += 1
        if b"\0" in line:
            raise FlowforgeError(f"{path}: holds binary data (a NUL byte on line {number}); not a CSV table")
        if len(line) > MAX_ROW_BYTES:
            raise FlowforgeError(f"{path}: line {number} is longer than {MAX_ROW_BYTES >> 20} MiB; "
                                 "not a CSV table of numbers")
        text = line.decode("utf-8", errors="replace")
        yield text.removeprefix("\ufeff") if number == 1 else text  # the byte-order mark of Excel's "CSV UTF-8"


def _numbers(cells: list[str]) -> bool:
    try:
        [float(cell) for cell in cells]
        return True
    except ValueError:
        return False


def _is_header(line: str, next_row: str = "") -> bool:
    """Whether a CSV's first line is a header: it is not numbers. A first line whose every cell is a
    quoted number is a header over plain rows (R's write.csv quotes numeric column names: "400","410"),
    and data in a file that quotes its rows too, or has no other row ("0.12","3")."""
    cells = line.split(",")
    if _numbers(cells):
        return False
    if not _numbers([_unquoted(cell) for cell in cells]):
        return True
    all_quoted = all(cell.strip().startswith('"') for cell in cells)
    return all_quoted and bool(next_row) and '"' not in next_row


def _unquoted(cell: str) -> str:
    """A cell without the double quotes some tools put around every value ("0.12")."""
    cell = cell.strip()
    return cell[1:-1] if len(cell) >= 2 and cell[0] == cell[-1] == '"' else cell


def _first_and_next_row(path: Path) -> tuple[str, str]:
    """A CSV's first line, and the first data row after it (blank lines and # comments skipped)."""
    with open(path, "rb") as fh:
        rows = _rows(fh, path)
        first = next(rows, "")
        return first, next((line for line in rows if _is_row(line)), "")


def _header(path: str | Path) -> tuple[list[str] | None, bool]:
    """A CSV's header names and whether they come from a ``#`` comment line (np.savetxt writes its
    header so); (None, False) for a file without one, or no CSV. Names are split by CSV quoting
    rules, spaces and quotes stripped, an empty name after a trailing comma dropped."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return None, False
    first, next_row = _first_and_next_row(path)
    comment = first.lstrip().startswith("#")
    text = first.lstrip()[1:] if comment else first
    if not text.strip() or (not comment and not _is_header(first, next_row)):
        return None, False
    cells = next(csv.reader([text.rstrip("\r\n")], skipinitialspace=True))
    names = [cell.strip().strip('"').strip("'").strip() for cell in cells]
    return (names[:-1] if len(names) > 1 and not names[-1] else names), comment


def header_names(path: str | Path) -> list[str] | None:
    """A CSV's header names (see :func:`_header`), or None for a file without one."""
    return _header(path)[0]


def table_columns(path: str | Path, width: int) -> list[str]:
    """The column names of a table: a CSV's header (or a first ``#`` comment line of as many names),
    else (or where it does not name each of the ``width`` columns) x0, x1, …"""
    names = header_names(path)
    return names if names is not None and len(names) == width and all(names) else [f"x{i}" for i in range(width)]


def header_problem(path: str | Path, width: int) -> str | None:
    """Why a CSV's header (not a comment line) cannot name its ``width`` columns (their names would be
    dropped), or None."""
    names, comment = _header(path)
    if names is None or comment or len(names) == width:
        return None
    return (f"{path}: its header names {len(names)} column{'s' if len(names) != 1 else ''} but its rows hold "
            f"{width}; give one name per column, or no header")


def column_problems(table: np.ndarray, columns: list[str], source: str) -> list[tuple[bool, str]]:
    """Why some columns of ``table`` cannot be modelled, or only poorly, as (fatal, message): a
    constant column has no density, and a flow puts a spike of density on each value of an
    integer-valued one (a discrete variable)."""
    problems, discrete = [], {}
    layout = npy_layout(source)
    stored_float32 = layout is not None and layout[0] == np.float32  # rounded to float32 whatever we read them in
    for j, name in enumerate(columns):
        values = table[:, j]
        if np.ptp(values) == 0:
            problems.append((True, f"{source}: column {name!r} is constant ({values[0]:g}); drop it, a "
                                   f"density of a constant is not finite{_float32_hint(values)}"))
        elif _float32_coarse(values, stored_float32):
            problems.append((False, f"{source}: column {name!r} {_coarse_values(values)}: "
                                    f"{_coarse_advice(stored_float32)}"))
        elif np.all(values == np.round(values)) and len(np.unique(values)) <= max(20, len(values) // 10):
            discrete[name] = len(np.unique(values))
    if discrete:  # one line, however many columns (an image flattened into a table has dozens)
        problems.append((False, f"{source}: {_discrete_columns(discrete)}; a continuous flow puts spikes on "
                                "them (add uniform noise in [0, 1) to dequantise)"))
    return problems


def _float32_coarse(values: np.ndarray, stored_float32: bool = False) -> bool:
    """Whether float32 has rounded a column to a coarse lattice: its spread is under 100 of float32's
    steps at its largest value (1e6 + 0.01·noise keeps 2 distinct values of 500). A column read in
    float64 from a file that stores float32 (``stored_float32``) was rounded all the same."""
    if values.dtype != np.float32 and not stored_float32:
        return False
    return values.std(dtype=np.float64) < 100 * _float32_step(values)


def _coarse_advice(stored_float32: bool) -> str:
    """What helps a column float32 rounds coarsely: reading it in float64, unless the file itself
    stores float32 (a .npy of float32 rounded it when saved)."""
    if stored_float32:
        return "the file stores float32, which rounded it when saved; save it as float64 (or subtract its mean first)"
    return "train with --dtype float64, or subtract its mean first"


def _float32_step(values: np.ndarray) -> float:
    """float32's spacing at a column's largest magnitude."""
    return float(np.spacing(np.abs(values).max().astype(np.float32)))


def npy_layout(source: str | Path) -> tuple[np.dtype, tuple[int, ...]] | None:
    """The element type and shape a .npy file stores (its header only), or None for any other
    source or an unreadable file (the readers name what is wrong with it)."""
    path = Path(source)
    if path.suffix.lower() != ".npy" or not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return array.dtype, array.shape


def _coarse_values(values: np.ndarray) -> str:
    """What float32 left of a column: its distinct values, spread and float32's step there."""
    spread, centre = values.std(dtype=np.float64), values.mean(dtype=np.float64)
    return (f"holds {len(np.unique(values))} distinct values as float32 (spread {spread:.3g} around "
            f"{centre:.7g}, where float32's steps are {_float32_step(values):.3g})")


def _float32_hint(values: np.ndarray) -> str:
    """For a constant float32 column far from 0 (where float32's steps reach 10⁻³): its values may have
    differed before float32 rounded them."""
    if values.dtype != np.float32 or np.spacing(np.abs(values[0])) < 1e-3:
        return ""
    return f" (or, if its values differ by less than {float(np.spacing(np.abs(values[0]))):.3g}, " \
           "train with --dtype float64: float32 rounds them to one)"


def _discrete_columns(values_per_column: dict[str, int], shown: int = 5) -> str:
    """"column 'a' holds only 3 integer values", or "columns 'a', 'b' and 4 more hold only 2 to 9 … each"."""
    names = list(values_per_column)
    named = ", ".join(repr(n) for n in names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
    low, high = min(values_per_column.values()), max(values_per_column.values())
    counts = f"{low}" if low == high else f"{low} to {high}"
    if len(names) == 1:
        return f"column {named} holds only {counts} integer values"
    return f"columns {named} hold only {counts} integer values each"


def _csv_chunks(path: Path) -> Iterator[np.ndarray]:
    """The CSV's numbers, :data:`CHUNK_ROWS` rows at a time, as float64 arrays."""
    with open(path, "rb") as fh:
        rows = _rows(fh, path)
        first = next(rows, "")
        if not first.strip():
            raise FlowforgeError(f"{path}: the file holds no rows")
        batch = [first]  # read on to the first data row after it: whether the first line is a header
        for line in rows:
            batch.append(line)
            if _is_row(line):
                break
        next_row = batch[-1] if len(batch) > 1 and _is_row(batch[-1]) else ""
        batch, done = (batch[1:] if _is_header(first, next_row) else batch), 0
        for line in rows:
            batch.append(line)
            if len(batch) == CHUNK_ROWS:
                yield _parse_csv(batch, path, done + 1)
                batch, done = [], done + sum(map(_is_row, batch))
        if batch:
            yield _parse_csv(batch, path, done + 1)


def _parse_csv(lines: list[str], path: Path, first_row: int) -> np.ndarray:
    """``lines`` as numbers; ``first_row`` numbers the first of them among the data rows (from 1,
    below any header), as every message about a table's rows does."""
    try:
        return np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float64, quotechar='"')
    except ValueError:
        raise FlowforgeError(f"{path}: not a numeric CSV table ({_first_problem(lines, first_row)})") from None


def _first_problem(lines: list[str], first_row: int) -> str:
    """What makes ``lines`` unreadable as a table, at the first row where it happens."""
    width, row = None, first_row
    for line in filter(_is_row, lines):
        cells = _row_text(line).split(",")
        width = width or len(cells)
        if len(cells) != width:
            return f"row {row} has {len(cells)} columns, earlier rows {width}"
        for j, cell in enumerate(cells):
            try:
                float(_unquoted(cell))
            except ValueError:
                return f"row {row}, column {j + 1} holds {cell.strip()[:40]!r}, not a number{_hint(cell, j, len(cells))}"
        row += 1
    return "a value that cannot be read as a number"


def _hint(cell: str, column: int, columns: int) -> str:
    """Why a cell may not read as a number: a comma ending its row, or another delimiter than ','."""
    if not cell.strip() and column == columns - 1:
        return " (a comma at the end of the row?)"
    for name, mark in (("semicolons", ";"), ("tabs", "\t"), ("spaces", " ")):
        if mark in cell.strip():
            return f" (its values look separated by {name}: flowforge reads comma-separated files)"
    return ""


def _row_text(line: str) -> str:
    """A line as :func:`numpy.loadtxt` reads it: without a ``#`` comment or the line's end."""
    return line.split("#", 1)[0].rstrip("\r\n")


def _is_row(line: str) -> bool:
    """Whether a line is a data row (numpy skips blank lines and comments; row numbers do too)."""
    return bool(_row_text(line).strip())


def _npy_chunks(path: Path) -> Iterator[np.ndarray]:
    """The .npy array, memory-mapped, :data:`CHUNK_ROWS` rows at a time."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise FlowforgeError(f"{path}: not a plain numeric .npy array ({err})") from None
    if np.iscomplexobj(array):
        raise FlowforgeError(f"{path}: holds complex values ({array.dtype}); give real numbers")
    if not np.issubdtype(array.dtype, np.number):
        raise FlowforgeError(f"{path}: holds {array.dtype} values, expected numbers")
    if array.ndim != 2:
        images = {3: " (an image array is (N, C, H, W), for an image model)",
                  4: " (an image array: train an image model on it)"}.get(array.ndim, "")
        raise FlowforgeError(f"{path}: expected a 2-D table (N rows, D columns), got shape {array.shape}{images}")
    for start in range(0, len(array), CHUNK_ROWS):
        yield np.asarray(array[start:start + CHUNK_ROWS])


def _fault(path: Path, values: np.ndarray, bad: np.ndarray, first_row: int, what: str,
           why: str = "") -> FlowforgeError:
    row, col = map(int, np.argwhere(bad)[0])
    return FlowforgeError(f"{path}: {what}value {values[row, col]:g} at row {first_row + row + 1}, "
                          f"column {col + 1}{why}")


def checked_values(values: np.ndarray, path: Path, first_row: int, dtype: type) -> np.ndarray:
    """``values`` as ``dtype``, refusing non-finite numbers and, for float32, numbers it cannot hold
    (beyond ±3.4e38, or non-zero but rounding to 0)."""
    wide = np.asarray(values, dtype=np.float64)
    if not np.isfinite(wide).all():
        raise _fault(path, wide, ~np.isfinite(wide), first_row, "non-finite ")
    if np.dtype(dtype) != np.float32:
        return wide.astype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        narrow = wide.astype(np.float32)
    if not np.isfinite(narrow).all():
        raise _fault(path, wide, ~np.isfinite(narrow), first_row, "",
                     f" is too large for float32 (beyond ±{FLOAT32.max:.3g}); rescale the data")
    if ((narrow == 0) & (wide != 0)).any():
        raise _fault(path, wide, (narrow == 0) & (wide != 0), first_row, "",
                     " is too small for float32 (it would round to 0); rescale the data")
    return narrow


def read_array(path: str | Path) -> np.ndarray:
    """A numeric .npy array of any shape (images: (N, C, H, W)), read without unpickling anything."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".npy":
        raise FlowforgeError(f"{path}: give a .npy array or a directory of images")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise FlowforgeError(f"{path}: not a plain numeric .npy array ({str(err)[:200]})") from None
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array) or not np.isfinite(array).all():
        raise FlowforgeError(f"{path}: holds {array.dtype} values that are not all finite real numbers")
    return array


def read_table(path: str | Path, *, dtype: type = np.float32) -> np.ndarray:
    """Read and validate an (N, D) table of finite numbers, as ``dtype`` (float32: what flows train
    in; values it cannot hold are refused); errors name the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise FlowforgeError(f"{path}: {'a folder, not a .csv or .npy file' if path.is_dir() else 'no such file'}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npy"):
        raise FlowforgeError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .npy")
    parts, rows = [], 0
    try:
        for chunk in (_csv_chunks(path) if suffix == ".csv" else _npy_chunks(path)):
            if not chunk.size:  # a run of blank lines
                continue
            if parts and chunk.shape[1] != parts[0].shape[1]:
                raise FlowforgeError(f"{path}: not a numeric CSV table (row {rows + 1} has {chunk.shape[1]} "
                                     f"columns, earlier rows {parts[0].shape[1]})")
            parts.append(checked_values(chunk, path, rows, dtype))
            rows += len(chunk)
    except OSError as err:
        raise FlowforgeError(f"{path}: cannot be read ({err.strerror or err})") from None
    if rows == 0:
        raise FlowforgeError(f"{path}: the file holds no rows")
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def write_table(path: str | Path, array: np.ndarray, header: str | None = None, fmt: str = "%.8g") -> None:
    """Write ``array`` as .csv (each number as ``fmt``) or .npy (by suffix), atomically: a crash
    leaves no half file."""
    write_table_batches(path, [array], array.shape, array.dtype, header, fmt)


def write_table_batches(path: str | Path, batches: Iterable[np.ndarray], shape: tuple[int, ...],
                        dtype=np.float32, header: str | None = None, fmt: str = "%.8g") -> None:
    """Write rows arriving in ``batches`` (``shape`` in all, as ``dtype``) as .csv (each number as
    ``fmt``) or .npy, atomically and without holding them all: memory depends on the batch, not on
    the table. ``path`` "-" (a string) writes the CSV to standard output, as it goes."""
    to_stdout, path = isinstance(path, str) and path == "-", Path(path)  # a Path("-") is a file of that name
    suffix = ".csv" if to_stdout else path.suffix.lower()
    if suffix not in (".csv", ".npy"):
        raise FlowforgeError(f"{path}: unsupported output type {suffix or '(none)'}; use .csv or .npy")
    try:
        if to_stdout:
            _write_rows(sys.stdout.buffer, batches, suffix, shape, dtype, header, fmt)
            sys.stdout.flush()
            return
        with atomic_target(path) as tmp, open(tmp, "wb") as fh:
            _write_rows(fh, batches, suffix, shape, dtype, header, fmt)
    except BrokenPipeError:  # `flowforge sample ... -o - | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    except OSError as err:
        raise FlowforgeError(f"{path}: cannot be written ({err.strerror or err})") from None


def _write_rows(fh, batches: Iterable[np.ndarray], suffix: str, shape: tuple[int, ...], dtype, header: str | None,
                fmt: str) -> None:
    if suffix == ".npy":
        npy_format.write_array_header_1_0(fh, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    elif header:
        fh.write(f"{header}\n".encode())
    written = 0
    for batch in batches:
        batch = np.ascontiguousarray(batch, dtype=dtype)
        fh.write(batch.tobytes()) if suffix == ".npy" else np.savetxt(fh, batch, delimiter=",", fmt=fmt)
        written += len(batch)
    if written != shape[0]:
        raise RuntimeError(f"write_table_batches: {written} rows written, {shape[0]} announced")
