"""Data sets: the 2-D toy densities by name, a user's .csv/.npy file, or images, split three ways."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowforge.data.context import COLUMNS, LABEL, ContextInfo, column_positions, one_hot, split_columns
from flowforge.data.files import (column_problems, file_sha256, files_sha256, header_problem, read_table, table_columns,
                                  write_table)
from flowforge.data.images import (IMAGE_CLASSES, IMAGE_DATASETS, image_files, image_label_splits, image_splits,
                                   is_idx_directory, is_image_array, is_image_source, read_image_array,
                                   read_png_folder)
from flowforge.data.toy import TOY_CLASSES, TOY_DATASETS, sample_toy, sample_toy_labelled
from flowforge.errors import FlowforgeError

TEST_SIZE = 10_000  # held-out points drawn for a toy set
VAL_SIZE = 2_000  # validation points drawn for a toy set: enough to pick the best step


@dataclass
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    columns: list[str] | None = None  # a table's column names (None for images)
    context: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (train, val, test) conditions, (N, K)
    context_info: ContextInfo | None = None  # what the conditions are (None: unconditional)

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape: (D,) for vectors, (C, H, W) for images."""
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int | tuple[int, ...]:
        """What a model builder takes: the number of features D of vectors, the shape (C, H, W) of images."""
        return self.shape[0] if len(self.shape) == 1 else self.shape


def is_toy(source: str) -> bool:
    return source in TOY_DATASETS


def load_splits(source: str, seed: int = 0, n_train: int = 3000, data_dir: str | None = None,
                context: str | list[str] | None = None, dtype: type = np.float32) -> Splits:
    """Train/validation/test splits of a toy set, a file or an image set.

    A toy set draws ``n_train`` training points from ``seed`` and its validation and test
    points from other seeds. A file is shuffled with ``seed`` and split 80/10/10. Image sets
    (digits, mnist from ``data_dir``, a directory of PNG or IDX files) are split as
    :mod:`flowforge.data.images` describes; ``n_train`` does not apply to them.

    ``context`` makes the splits conditional (:mod:`flowforge.data.context`): ``"label"`` for a
    labelled set's one-hot labels, or a list of a table's columns (names or 0-based indices).
    ``dtype`` is what a file's numbers are read as (a float64 run's: float32 would round them first).
    """
    if context == LABEL:
        return _labelled_splits(source, seed, n_train, data_dir)
    if context is not None and (is_toy(source) or is_image_source(source)):
        raise FlowforgeError(f"{source}: --context-columns applies to a table (.csv/.npy); for a labelled set "
                             "give --context label")
    if is_toy(source):
        train, val, test = (sample_toy(source, n, s) for n, s in _toy_draws(seed, n_train))
        return Splits(train, val, test, [f"x{i}" for i in range(train.shape[1])])
    if is_image_source(source):
        return Splits(*image_splits(source, seed, data_dir))
    if not source.lower().endswith((".csv", ".npy")):
        raise FlowforgeError(f"unknown data {source!r}: give a toy set ({', '.join(TOY_DATASETS)}), "
                             f"an image set ({', '.join(IMAGE_DATASETS)}, a directory of images, a .npy image array) or a .csv/.npy file")
    table = read_table(source, dtype=dtype)
    if len(table) < 10:
        raise FlowforgeError(f"{source}: {len(table)} rows are too few to split for training (need 10)")
    order = np.random.default_rng(seed).permutation(len(table))
    n_val = n_test = max(1, len(table) // 10)
    splits = np.split(table[order], [n_test, n_test + n_val])
    columns = table_columns(source, table.shape[1])
    if context is None:
        return Splits(splits[2], splits[1], splits[0], columns)
    mismatch = header_problem(source, table.shape[1])
    if mismatch and any(name not in columns and not name.isdigit() for name in context):  # not "no column 'theta'"
        raise FlowforgeError(mismatch)
    positions = column_positions(list(context), columns, source)
    (test, c_test), (val, c_val), (train, c_train) = (split_columns(part, positions) for part in splits)
    kept = [name for j, name in enumerate(columns) if j not in positions]
    return Splits(train, val, test, kept, (c_train, c_val, c_test),
                  ContextInfo(COLUMNS, [columns[j] for j in positions], positions))


def _toy_draws(seed: int, n_train: int) -> list[tuple[int, int]]:
    """(points, seed) of a toy set's training, validation and test draws: each its own seed from ``seed``."""
    seeds = np.random.SeedSequence(seed).generate_state(3)
    return [(n, int(s)) for n, s in zip((n_train, VAL_SIZE, TEST_SIZE), seeds)]


def _labelled_splits(source: str, seed: int, n_train: int, data_dir: str | None) -> Splits:
    """A labelled set's splits with each point's or image's label, one-hot, as the context."""
    if is_toy(source):
        if source not in TOY_CLASSES:
            raise FlowforgeError(f"{source} has no labels; the labelled toy sets are {', '.join(TOY_CLASSES)}")
        parts = [sample_toy_labelled(source, n, s) for n, s in _toy_draws(seed, n_train)]
        points, labels = [p[0] for p in parts], [p[1] for p in parts]
        classes = TOY_CLASSES[source]
    elif is_image_source(source):
        points = list(image_splits(source, seed, data_dir))
        labels = list(image_label_splits(source, data_dir))
        classes = IMAGE_CLASSES.get(source) or int(max(part.max() for part in labels)) + 1
    else:
        raise FlowforgeError(f"{source}: --context label needs a labelled set ({', '.join(TOY_CLASSES)}, "
                             f"{', '.join(IMAGE_CLASSES)}); for a table give --context-columns")
    if any(len(p) != len(l) for p, l in zip(points, labels)):
        raise FlowforgeError(f"{source}: the label files hold {[len(l) for l in labels]} labels for "
                             f"{[len(p) for p in points]} images (train, validation, test); they must match")
    columns = [f"x{i}" for i in range(points[0].shape[1])] if points[0].ndim == 2 else None
    return Splits(*points, columns, tuple(one_hot(part, classes) for part in labels),
                  ContextInfo(LABEL, [str(k) for k in range(classes)]))


def load_points(source: str, seed: int = 0, data_dir: str | None = None, dtype: type = np.float32) -> np.ndarray:
    """Points to evaluate: a toy set's or an image set's held-out test split (MNIST's: its official
    test images), every image of a folder of PNGs (in file-name order) or of an image array, or
    every row of a file (as ``dtype``)."""
    if is_image_source(source) and source not in IMAGE_DATASETS and not is_idx_directory(source):
        return read_image_array(source) if is_image_array(source) else read_png_folder(source)
    if is_toy(source) or is_image_source(source):
        return load_splits(source, seed, n_train=1, data_dir=data_dir).test
    return read_table(source, dtype=dtype)


def data_digest(source: str, data_dir: str | None = None) -> str | None:
    """The SHA-256 of a user's data (a file, or the files a folder's images are read from; MNIST's
    named set: its --data-dir), None for a generated or packaged set: what a run records, so that a
    file changed since is noticed before its rows are split again as if they were the same."""
    if is_toy(source) or source == "digits" or (source == "mnist" and not data_dir):
        return None
    path = Path(data_dir if source == "mnist" else source)
    return files_sha256(image_files(path)) if path.is_dir() else file_sha256(path)


def changed_data(raw: dict, data_dir: str | None = None) -> str | None:
    """The data of a run trained on a user's file (read from ``data_dir`` when given) when it is no
    longer what the run was trained on (its SHA-256 differs, or it is gone); None when it is the
    same, or the run recorded none."""
    recorded, train = raw.get("data_sha256"), raw.get("train") or {}
    if not isinstance(recorded, str) or not isinstance(train.get("data"), str):
        return None
    data_dir = data_dir or train.get("data_dir")
    source = train["data"] if train["data"] != "mnist" else data_dir
    return None if data_digest(train["data"], data_dir) == recorded else str(source)


__all__ = ["data_digest", "changed_data", "Splits", "ContextInfo", "LABEL", "COLUMNS", "TOY_DATASETS", "IMAGE_DATASETS", "TEST_SIZE", "load_splits", "load_points", "sample_toy",
           "read_table", "write_table", "table_columns", "column_problems", "is_toy", "is_image_source"]
