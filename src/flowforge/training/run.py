"""Build a flow from a config and load a trained one back from its run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowforge.distributions import Flow
from flowforge.errors import FlowforgeError
from flowforge.models import build_model
from flowforge.training.checkpoint import (BEST_WEIGHTS, CONFIG, load_tensors, load_weights, read_json,
                                           split_prefix)
from flowforge.training.config import TrainConfig


def build_flow(config: TrainConfig, dim: int | tuple[int, ...]) -> Flow:
    """The config's model for data of ``dim`` features (vectors) or of shape ``dim`` = (C, H, W) (images)."""
    try:
        return build_model(config.model, dim, standardize=config.standardize, **config.model_options)
    except (TypeError, ValueError) as err:
        raise FlowforgeError(f"cannot build model {config.model!r}: {err}") from None


def data_shape(raw_config: dict[str, Any]) -> int | tuple[int, ...]:
    """The ``dim`` a run's config.json records: D for vector data, [C, H, W] for images (as a tuple)."""
    dim = raw_config["dim"]
    try:
        return tuple(int(d) for d in dim) if isinstance(dim, list) else int(dim)
    except (TypeError, ValueError):
        raise FlowforgeError(f"corrupt config: 'dim' is {dim!r}") from None


def load_run(run_dir: str | Path, weights: str = BEST_WEIGHTS) -> tuple[Flow, TrainConfig, dict[str, Any]]:
    """The trained flow of a run (best weights by default), its config and the config file's extras."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FlowforgeError(f"{run_dir}: no such run directory")
    raw = read_json(run_dir / CONFIG)
    if "train" not in raw or "dim" not in raw:
        raise FlowforgeError(f"{run_dir / CONFIG}: corrupt, lacks 'train' or 'dim'")
    config = TrainConfig.from_dict(raw["train"])
    flow = build_flow(config, data_shape(raw))
    tensors, _ = load_tensors(run_dir / weights)
    if weights != BEST_WEIGHTS:  # a full checkpoint keeps the model under "model."
        tensors = split_prefix(tensors, "model.")
    load_weights(flow, tensors, run_dir / weights)
    if not all(torch.isfinite(p).all() for p in flow.state_dict().values()):
        raise FlowforgeError(f"{run_dir / weights}: holds non-finite weights")
    return flow.eval(), config, raw
