"""What a conditional run conditions on: some columns of a user's table (``--context-columns a,b``)
or the label of a labelled set (``--context label``: which moon, mode or arm of a toy set, which
digit of an image), given to the flow one-hot.

A flow trained so models p(x | c): x is the rest of the table, or the points or images.
:class:`ContextInfo` is what a run records of its context (config.json's ``context``), so that
``sample``, ``density`` and ``eval`` read conditions the way training did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any

import numpy as np

from flowforge.errors import FlowforgeError, warn

LABEL, COLUMNS = "label", "columns"


@dataclass(frozen=True)
class ContextInfo:
    """A run's context: ``kind`` "label" (``names`` are the classes, the flow sees them one-hot) or
    "columns" (``names`` are the table's context columns, at ``positions`` of the training file)."""
    kind: str
    names: list[str]
    positions: list[int] = field(default_factory=list)

    @property
    def dim(self) -> int:
        """The size of the context the flow sees: the number of classes, or of context columns."""
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": list(self.names), "positions": list(self.positions)}

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "ContextInfo | None":
        """A run's recorded context (None for an unconditional run); a malformed one is refused."""
        if raw is None:
            return None
        ok = (isinstance(raw, dict) and raw.get("kind") in (LABEL, COLUMNS)
              and isinstance(raw.get("names"), list) and 0 < len(raw["names"]) <= 100_000
              and all(isinstance(n, str) for n in raw["names"])
              and isinstance(raw.get("positions", []), list)
              and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in raw.get("positions", [])))
        if not ok:
            raise FlowforgeError(f"{source}: corrupt 'context' (expected kind, names and positions)")
        return cls(raw["kind"], list(raw["names"]), list(raw.get("positions", [])))


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """Labels 0 … classes − 1 as float32 rows of one-hot vectors.

    >>> import numpy as np
    >>> from flowforge.data.context import one_hot
    >>> one_hot(np.array([1, 0]), 3).tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    """
    return np.eye(classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def column_positions(wanted: list[str], columns: list[str], source: str) -> list[int]:
    """Where the ``wanted`` columns stand among ``columns``: each is a header name or a 0-based index.

    >>> from flowforge.data.context import column_positions
    >>> column_positions(["b", "0"], ["a", "b", "c"], "t.csv")
    [1, 0]
    """
    positions = []
    for item in wanted:
        name = item.strip()
        if name in columns:
            positions.append(columns.index(name))
        elif name.isdigit() and int(name) < len(columns):
            positions.append(int(name))
        else:
            raise FlowforgeError(f"{source}: no column {name!r} for --context-columns; its columns are "
                                 f"{', '.join(columns[:20])}{' …' if len(columns) > 20 else ''} (or 0-based indices)")
    if len(set(positions)) != len(positions):
        raise FlowforgeError(f"{source}: --context-columns names a column twice")
    if len(positions) >= len(columns):
        raise FlowforgeError(f"{source}: --context-columns takes every column, leaving nothing to model")
    return positions


def split_columns(table: np.ndarray, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(the modelled columns, the context columns at ``positions``) of a table."""
    rest = [j for j in range(table.shape[1]) if j not in positions]
    return table[:, rest], table[:, positions]


def parse_condition(text: str, info: ContextInfo, dtype: type = np.float32) -> np.ndarray:
    """One condition from the command line, as the flow's (1, K) context (of the flow's ``dtype``):
    a class (its name or index) for a label run, K comma-separated numbers for a columns run."""
    if info.kind == LABEL:
        return one_hot(np.array([class_index(text, info)]), info.dim)
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != info.dim:
        raise FlowforgeError(f"--context {text!r} gives {len(parts)} values, but the run conditions on "
                             f"{info.dim} ({', '.join(info.names)})")
    try:
        values = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise FlowforgeError(f"--context {text!r}: give {info.dim} numbers separated by commas "
                             f"({', '.join(info.names)})") from None
    return finite_conditions(values[None], f"--context {text!r}", dtype)


def finite_conditions(values: np.ndarray, source: str, dtype: type = np.float32) -> np.ndarray:
    """Conditions as the flow's ``dtype`` (float32 or float64), refusing any that are not finite
    there (beyond ±3.4e38 in float32, say)."""
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = np.asarray(values, dtype=np.float64).astype(dtype)
    if not np.isfinite(narrow).all():
        name = np.dtype(dtype).name
        bound = " (within ±3.4e38)" if np.dtype(dtype) == np.float32 else ""
        raise FlowforgeError(f"{source}: the context values must be finite {name} numbers{bound}")
    return narrow


def class_index(value: Any, info: ContextInfo) -> int:
    """A class given by name or index, as its index; an unknown one is refused with the list."""
    text = str(value).strip()
    if text in info.names:
        return info.names.index(text)
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if number.is_integer() and 0 <= number < info.dim:
        return int(number)
    raise FlowforgeError(f"unknown class {text!r}: the run's classes are {', '.join(info.names)}")


def conditions_from_table(table: np.ndarray, info: ContextInfo, source: str,
                          names: list[str] | None = None, dtype: type = np.float32) -> np.ndarray:
    """Conditions given one per row (``--context-file``): K columns of values (in the run's order, or
    by the file's header ``names``), or one column of classes, as the flow's (N, K) context."""
    width = 1 if info.kind == LABEL else info.dim
    if table.shape[1] != width:
        what = "one column of classes" if info.kind == LABEL else f"{width} columns ({', '.join(info.names)})"
        raise FlowforgeError(f"{source} has {table.shape[1]} columns; a condition per row needs {what}")
    if info.kind == LABEL:
        return one_hot(np.array([class_index(_number(v), info) for v in table[:, 0]]), info.dim)
    order = _by_name(names, info.names, source)
    return finite_conditions(table if order is None else table[:, order], source, dtype)


def _by_name(names: list[str] | None, wanted: list[str], source: str) -> list[int] | None:
    """Where ``wanted`` stand among a file's header ``names``: all by name, or None when the header
    names none of them (the file is then read by position, with a warning when both sides carry
    real names); a header naming only some is refused."""
    if names is not None and _positional(names):  # made up for a file without a header: nothing to match
        names = None
    found = [name for name in wanted if names and name in names]
    if not found:
        if names and not _positional(names) and not _positional(wanted):
            warn(f"{source}: its header names none of the run's columns ({', '.join(wanted)}); read by position")
        return None
    if len(found) < len(wanted):
        missing = [name for name in wanted if name not in found]
        raise FlowforgeError(f"{source}: its header names some of the run's columns but not {', '.join(missing)}")
    repeated = sorted({name for name in found if names.count(name) > 1 or wanted.count(name) > 1})
    if repeated and list(names) != list(wanted):  # the same header as the run's reads as it stands
        raise FlowforgeError(f"{source}: its header names {', '.join(map(repr, repeated))} more than once, so "
                             "its columns cannot be matched to the run's by name; give each column its own name")
    return list(range(len(wanted))) if repeated else [names.index(name) for name in wanted]


def columns_by_name(table: np.ndarray, names: list[str], recorded: list[str], source: str) -> np.ndarray:
    """A file's columns in a run's order: by its header's ``names`` where they name the run's
    ``recorded`` columns (a header naming only some is refused), else by position, with a warning
    when both carry names and the header uses none of the run's.

    >>> import numpy as np
    >>> from flowforge.data.context import columns_by_name
    >>> columns_by_name(np.array([[1.0, 2.0]]), ["b", "a"], ["a", "b"], "f.csv")
    array([[2., 1.]])
    """
    order = _by_name(names, recorded, source)
    return table if order is None else table[:, order]


def _positional(names: list[str]) -> bool:
    """Names made up for a table without a header (x0, x1, …)."""
    return list(names) == [f"x{i}" for i in range(len(names))]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def points_and_conditions(table: np.ndarray, names: list[str] | None, info: ContextInfo, x_names: list[str],
                          source: str, or_else: str = "", dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """A file laid out as the run's training table (every column by header name, else by the
    training positions), or for a label run x's columns and a ``label`` column: (x, context).
    ``or_else`` ends the message of a file laid out otherwise (what else the command takes)."""
    x_dim = len(x_names)
    if info.kind == LABEL:
        if not names or LABEL not in names or table.shape[1] != x_dim + 1:
            raise FlowforgeError(f"{source}: a label run reads {x_dim} columns and a column named 'label'"
                                 + (f" ({or_else})" if or_else else ""))
        where = names.index(LABEL)
        x = np.delete(table, where, axis=1)
        return x, conditions_from_table(table[:, [where]], info, source)
    if table.shape[1] != x_dim + info.dim:
        raise FlowforgeError(f"{source} has {table.shape[1]} columns but the run reads {x_dim + info.dim} "
                             f"({x_dim} modelled and the context {', '.join(info.names)})"
                             + (f", {or_else}" if or_else else ""))
    order = _by_name(names, list(x_names) + list(info.names), source)
    if order is not None:
        x, context = table[:, order[:x_dim]], table[:, order[x_dim:]]
    else:
        x, context = split_columns(table, info.positions)
    return x, finite_conditions(context, source, dtype)
