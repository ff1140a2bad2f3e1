"""Training configuration as plain data (saved as config.json in every run directory)."""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flowforge.errors import FlowforgeError


VECTOR_TRAIN_NOISE = 0.03  # moons, default model at 2,000 steps, 10 seeds: mean test NLL 1.164 (0.02: 1.166)


def trainer_model_options(model: str) -> dict[str, Any]:
    """Builder options the trainer writes into every config.json, so that a later change of
    default cannot change what a saved run resumes or loads as.

    For RealNVP they differ from the builder's own defaults: the builder keeps the book's
    6 couplings of 4×256; the trainer's, 12 couplings of 3×128, scored a lower test NLL on moons
    at 8 of 10 seeds, each at its own lr (7e-4, 5e-4), both with noise 0.02 and 2,000 steps
    (mean 1.166 against 1.183; docs/moons_defaults.md).
    """
    if model == "realnvp":
        return {"num_layers": 12, "hidden": 128, "depth": 3}
    if model == "ffjord":
        from flowforge.models.flow_matching import TIME_POWER

        return {"fm_time_power": TIME_POWER}
    return {}


# What configs saved before an option was recorded were trained with (the builder's default then).
UNRECORDED_MODEL_OPTIONS = {"realnvp": {"num_layers": 6, "hidden": 256, "depth": 4},
                            "ffjord": {"fm_time_power": 1.0}}


@dataclass
class TrainConfig:
    model: str = "realnvp"
    data: str = "moons"          # a toy set name, a .csv/.npy path, an image set (digits, mnist) or a directory
    data_dir: str | None = None  # where a named image set's files are (mnist)
    n_train: int = 3000          # training points drawn for a toy set
    steps: int = 3000            # moons with noise 0.03, 10 seeds: mean test NLL 1.162 (2,000 steps: 1.164)
    batch_size: int = 256
    lr: float = 7e-4             # moons, 12 x 3x128, seeds 0-4: mean test NLL 1.165 (5e-4: 1.168; 1e-3: 1.170)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01   # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.2     # decoupled (AdamW); with the EMA, measured to cut overfitting on moons
    grad_clip: float = 10.0
    l2: float = 0.0              # Keras's l2: λ · Σ w² over the kernels, added to the loss (so to train_nll)
    ema_decay: float = 0.995     # weights averaged for evaluation and the saved model; 0 turns it off
    train_noise: float | None = None  # Gaussian noise added to training vectors, in units of each feature's
    #                                   std; None: 0.03 for vector data (cuts overfitting), 0 for images
    eval_every: int = 200
    seed: int = 0
    standardize: bool | None = None  # None: standardise vector data, never images
    on_nan: str = "rollback"     # "rollback" (restore last good state, halve lr), "skip" the step, or "stop"
    objective: str = "mle"       # "mle"; a model may offer others through its training_loss
    model_options: dict[str, Any] = field(default_factory=dict)  # the builder's keyword arguments

    def __post_init__(self) -> None:
        if self.standardize is None:
            self.standardize = not self._images()
        if self.train_noise is None:
            self.train_noise = 0.0 if self._images() else VECTOR_TRAIN_NOISE
        self.model_options = {**trainer_model_options(self.model), **self.model_options}

    def _images(self) -> bool:
        from flowforge.data import is_image_source

        return is_image_source(self.data)

    def validate(self) -> "TrainConfig":
        """Refuse values of the wrong type or outside their range, naming the option (``--steps``)."""
        from flowforge.training.validate import check_train_values

        check_train_values(self.to_dict(), _option_label)
        if self.train_noise and self._images():
            raise FlowforgeError("--train-noise applies to vector data (images are dequantised instead)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Any, *, source: str = "config.json") -> "TrainConfig":
        """A config from its saved form, each value checked first (``source`` names the file in errors)."""
        from flowforge.training.validate import check_train_values

        if not isinstance(values, dict):
            raise FlowforgeError(f"{source}: 'train' must be an object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        check_train_values(values, lambda name: f"{source}: train.{name}")
        unrecorded = UNRECORDED_MODEL_OPTIONS.get(values.get("model", cls.model), {})
        values["model_options"] = {**unrecorded, **values.get("model_options", {})}
        # A run saved before train_noise existed trained without noise, and must resume so.
        return cls(**{"train_noise": 0.0, **values})


def _option_label(field_name: str) -> str:
    """How the command line spells a config field: ``--batch-size``, ``--model-option hidden``."""
    if field_name.startswith("model_options."):
        return f"--model-option {field_name.removeprefix('model_options.')}"
    return f"--{field_name.replace('_', '-')}"


def versions() -> dict[str, str]:
    from flowforge import __version__

    return {"flowforge": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
