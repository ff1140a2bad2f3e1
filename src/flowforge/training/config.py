"""Training configuration as plain data (saved as config.json in every run directory).

A field left at ``None`` is the model's recipe's to fill (:mod:`flowforge.models.specs`): the
trainer resolves it for the data at hand and records the resolved value, with the recipe's
name, so a saved run never depends on a later change of default. Torch-free.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass, field
from typing import Any

from flowforge.errors import FlowforgeError

CONFIG_VERSION = 4  # 1: before the recipes (no version recorded), 2: before conditional runs,
# 3: before MAF's scale_bound; see migrations
VECTOR_TRAIN_NOISE = 0.03  # moons, default model at 2,000 steps, 10 seeds: mean test NLL 1.164 (0.02: 1.166)
GENERIC_RECIPE = {"steps": 3000, "batch_size": 256, "lr": 7e-4, "warmup_steps": 100, "weight_decay": 0.2,
                  "ema_decay": 0.995, "eval_every": 200, "patience": 0}  # under every model's own recipe


def _help(text: str, cli: bool = True, unset: str = "the recipe") -> dict[str, Any]:
    """A field's help; ``unset`` says what None means (most fields: the model's recipe fills it in)."""
    return {"help": text, "cli": cli, "unset": unset}


@dataclass
class TrainConfig:
    """How to train: the fields are the ``flowforge train`` options (``--batch-size`` for
    ``batch_size``); ``None`` means the model's recipe for the data."""
    model: str = field(default="realnvp", metadata=_help("the model family"))
    data: str = field(default="moons", metadata=_help("the data", cli=False))  # the CLI's own help
    data_dir: str | None = field(default=None, metadata=_help("the data's folder", cli=False))
    n_train: int = field(default=3000, metadata=_help("training points drawn for a toy set"))
    steps: int | None = field(default=None, metadata=_help("optimisation steps"))
    batch_size: int | None = field(default=None, metadata=_help("rows per step"))
    lr: float | None = field(default=None, metadata=_help("peak learning rate (warm-up, then cosine decay)"))
    warmup_steps: int | None = field(default=None, metadata=_help("linear warm-up steps (capped at a tenth of the run)"))
    min_lr_ratio: float = field(default=0.01, metadata=_help("the cosine decay ends at lr × this"))
    weight_decay: float | None = field(default=None, metadata=_help("decoupled weight decay (AdamW)"))
    grad_clip: float = field(default=10.0, metadata=_help("clip the gradient norm at this"))
    l2: float = field(default=0.0, metadata=_help(
        "λ · Σ w² over the networks' kernels added to the loss (Keras's l2 regulariser; the book's 0.01)"))
    ema_decay: float | None = field(default=None, metadata=_help(
        "average the weights for evaluation and the saved model (0: off)"))
    train_noise: float | None = field(default=None, metadata=_help(
        "Gaussian noise added to training vectors, in units of each feature's std (against memorising)"))
    eval_every: int | None = field(default=None, metadata=_help("steps between validations and checkpoints"))
    patience: int | None = field(default=None, metadata=_help(
        "stop after this many validations without a better NLL (0: never; the best weights are kept)"))
    seed: int = field(default=0, metadata=_help("the seed of everything random (data, weights, batches)"))
    standardize: bool | None = field(default=None, metadata=_help(
        "train on standardised data (densities and samples stay in data units); default: vectors only", cli=False))
    on_nan: str = field(default="rollback", metadata=_help(
        "on a non-finite loss: restore the last good state and halve the lr, skip the step, or stop"))
    objective: str | None = field(default=None, metadata=_help("training objective (the recipe's by default: mle, or flow-matching for ffjord)"))
    device: str = field(default="auto", metadata=_help("auto (CUDA when available), cpu, cuda or cuda:N"))
    dtype: str = field(default="float32", metadata=_help("the model's and the data's floating-point type"))
    context: str | None = field(default=None, metadata=_help(
        "condition on the data's labels (label: which moon, mode, arm or digit), learning p(x | label)",
        unset="none"))
    context_columns: list[str] | None = field(default=None, metadata=_help(
        "a table's columns to condition on (names or 0-based indices), learning p(other columns | these)", cli=False))
    recipe: str | None = field(default=None, metadata=_help("the recipe the defaults came from", cli=False))
    model_options: dict[str, Any] = field(default_factory=dict, metadata=_help("builder keywords", cli=False))

    def __post_init__(self) -> None:
        # A path given as a Path in Python is the string the command line would give
        for name in ("data", "data_dir"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        # A column index given as a number in Python is the string the command line would give
        if isinstance(self.context_columns, (list, tuple)):
            self.context_columns = [str(c) if isinstance(c, int) and not isinstance(c, bool) else c
                                    for c in self.context_columns]

    def validate(self) -> "TrainConfig":
        """Refuse values of the wrong type or outside their range, naming the option (``--steps``)."""
        from flowforge.training.validate import check_train_values

        check_train_values(self.to_dict(), option_label)
        from flowforge.models.specs import SPECS

        if self.model not in SPECS:
            raise FlowforgeError(f"--model {self.model!r} is not a model; choose from {', '.join(sorted(SPECS))}")
        spec = SPECS[self.model]
        if self.objective is not None and self.objective not in spec.objectives:
            raise FlowforgeError(f"{self.model} trains by {' or '.join(spec.objectives)}, not {self.objective!r}")
        if self.train_noise and spec.images:
            raise FlowforgeError("--train-noise applies to vector data (images are dequantised instead)")
        if self.standardize and spec.images:
            raise FlowforgeError(f"{self.model} does not standardise its data: pixels are dequantised and scaled "
                                 "to [0, 1] (use --no-standardize)")
        if self.context and self.context_columns:
            raise FlowforgeError("give --context label or --context-columns, not both")
        return self

    def unconditional(self) -> "TrainConfig":
        """This config without its context (to read data as plain points)."""
        return dataclasses.replace(self, context=None, context_columns=None)

    @property
    def conditions_on(self) -> str | list[str] | None:
        """What the data loader conditions on: "label", a table's columns, or None."""
        return self.context or self.context_columns

    def resolved(self, info) -> "TrainConfig":
        """Every ``None`` field filled from the model's recipe for data ``info``
        (a :class:`flowforge.models.specs.DataInfo`), and every builder option recorded."""
        from flowforge.models.specs import spec_of

        spec = spec_of(self.model)
        recipe = dict(spec.recipe(info))
        options = recipe.pop("model_options", {})
        defaults = {**GENERIC_RECIPE, "objective": spec.objectives[0], "standardize": not spec.images,
                    "train_noise": 0.0 if spec.images else VECTOR_TRAIN_NOISE, **recipe}
        values = {name: defaults[name] if getattr(self, name) is None and name in defaults else getattr(self, name)
                  for name in self.field_names() if name != "model_options"}
        values["recipe"] = self.recipe or f"{self.model}/{info.kind}"
        idle = set(spec.idle_options(values["objective"], options))  # the recipe's, for an objective the user replaced
        idle |= set() if values["standardize"] else set(spec.standardized_options)  # or under --no-standardize
        options = {name: value for name, value in options.items() if name not in idle}
        recorded = spec.builder_options()
        conditional = {"context_dim": info.context_dim} if info.context_dim else {}  # the data's, not an option
        return TrainConfig(**values, model_options={**recorded, **options, **self.model_options, **conditional})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Any, *, source: str = "config.json", version: int = CONFIG_VERSION) -> "TrainConfig":
        """A config from its saved form (written by config format ``version``), migrated to today's
        and each value checked first (``source`` names the file in errors)."""
        from flowforge.training.migrations import migrate_train
        from flowforge.training.validate import check_train_values

        if not isinstance(values, dict):
            raise FlowforgeError(f"{source}: 'train' must be an object, got {type(values).__name__}")
        values = migrate_train(dict(values), version, source)
        known = set(cls.field_names())
        values = {k: v for k, v in values.items() if k in known}
        check_train_values(values, lambda name: f"{source}: train.{name}")
        return cls(**values)


def option_label(field_name: str) -> str:
    """How the command line spells a config field: ``--batch-size``, ``--model-option hidden``."""
    if field_name.startswith("model_options."):
        return f"--model-option {field_name.removeprefix('model_options.')}"
    return f"--{field_name.replace('_', '-')}"


def cli_fields() -> list[tuple[str, Any, str]]:
    """(name, default, help) of every field the command line offers as ``--name``; a None default
    is shown as what it means (the recipe's value, or none)."""
    return [(f.name, f.metadata["unset"] if f.default is None else f.default, f.metadata["help"])
            for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli")]


def versions() -> dict[str, str]:
    import numpy as np
    import torch

    from flowforge import __version__

    return {"flowforge": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}

