"""What each TrainConfig field may hold (type, range, choices), read by the config's checks and
by the command line, which generates its training options from it. Torch-free."""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_PARAMS = 200_000_000  # about 0.8 GB of float32 weights (Glow on 3×32×32 images: 44 M)
MAX_PARAMS: ContextVar[int] = ContextVar("flowforge_max_params", default=DEFAULT_MAX_PARAMS)  # --max-params


@dataclass(frozen=True)
class Field:
    """What a TrainConfig field may hold: its type, its range and its choices."""
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit (None when it does)."""
        if value is None:
            return None if self.optional else "must be given"
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, _ACCEPTED[self.kind]):
            return f"must be {_KIND_NAMES[self.kind]}, got {_shown(value)}"
        if self.choices and value not in self.choices:
            return f"must be {' or '.join(repr(c) for c in self.choices)}, got {_shown(value)}"
        if self.kind in (int, float):
            return self._range_problem(value)
        if self.kind is list and not (0 < len(value) <= 100_000 and all(isinstance(v, str) and v for v in value)):
            return f"must be a non-empty list of column names or 0-based indices, got {_shown(value)}"
        return None

    def _range_problem(self, value: float) -> str | None:
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"must be in {left}{_number(self.low)}, {_number(self.high)}{right}, got {value}"
        return None


_ACCEPTED = {int: int, float: (int, float), str: str, bool: bool, dict: dict, list: list}
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
               list: "a list"}
TRAIN_FIELDS = {  # recipe fields are optional: None until the model's recipe fills them in
    "model": Field(str), "data": Field(str), "data_dir": Field(str, optional=True),
    "n_train": Field(int, 10, 100_000_000), "steps": Field(int, 1, 1_000_000_000, optional=True),
    "batch_size": Field(int, 1, 10_000_000, optional=True), "lr": Field(float, 0, 1e3, low_open=True, optional=True),
    "warmup_steps": Field(int, 0, 1_000_000_000, optional=True), "min_lr_ratio": Field(float, 0, 1),
    "weight_decay": Field(float, 0, 1e3, optional=True), "grad_clip": Field(float, 0, 1e12, low_open=True),
    "l2": Field(float, 0, 1e3),
    "ema_decay": Field(float, 0, 1, high_open=True, optional=True),
    "train_noise": Field(float, 0, 1, high_open=True, optional=True),
    "eval_every": Field(int, 1, 1_000_000_000, optional=True), "patience": Field(int, 0, 1_000_000_000, optional=True),
    "seed": Field(int, 0, 2 ** 63 - 1), "standardize": Field(bool, optional=True),
    "on_nan": Field(str, choices=("rollback", "skip", "stop")), "objective": Field(str, optional=True),
    "device": Field(str), "dtype": Field(str, choices=("float32", "float64")), "recipe": Field(str, optional=True),
    "context": Field(str, optional=True, choices=("label",)), "context_columns": Field(list, optional=True),
    "model_options": Field(dict),
}


def _number(value: float | None) -> str:
    return "∞" if value is None else f"{value:g}"


def _shown(value: Any) -> str:
    if hasattr(value, "shape") and not isinstance(value, (int, float)):  # an array or a tensor: not its numbers
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
