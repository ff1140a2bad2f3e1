"""Build a flow from a config and load a trained one back from its run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowforge.distributions import Flow
from flowforge.errors import FlowforgeError
from flowforge.models.specs import spec_of
from flowforge.training.checkpoint import (BEST_WEIGHTS, CONFIG, load_tensors, load_weights, read_json,
                                           split_prefix)
from flowforge.training.config import TrainConfig
from flowforge.training.device import resolve_device, resolve_dtype
from flowforge.training.rundir import active_writer, no_run_directory
from flowforge.transforms import StandardizeContext
from flowforge.training.validate import (check_buffers, check_data_shape, check_model_size,
                                         check_weights_file_size)


def build_flow(config: TrainConfig, dim: int | tuple[int, ...]) -> Flow:
    """The config's model for data of ``dim`` features (vectors) or of shape ``dim`` = (C, H, W) (images)."""
    try:
        spec = spec_of(config.model)
    except ValueError as err:
        raise FlowforgeError(f"cannot build model {config.model!r}: {err}") from None
    known = spec.builder_options()
    unknown = sorted(set(config.model_options) - set(known))
    if unknown:
        raise FlowforgeError(f"model {config.model!r} has no option {', '.join(unknown)}; its options: "
                             f"{', '.join(sorted(known))}")
    try:
        standardize = {} if spec.images else {"standardize": bool(config.standardize)}  # images: dequantised
        flow = spec.build(dim, **standardize, **config.model_options)
    except (TypeError, ValueError) as err:
        raise FlowforgeError(f"cannot build model {config.model!r}: {err}") from None
    if config.context_columns and standardize.get("standardize"):  # a table's conditions, of any scale
        flow.context_embedding = StandardizeContext(flow.context_dim)
    return flow


def data_shape(raw_config: dict[str, Any]) -> int | tuple[int, ...]:
    """The ``dim`` a run's config.json records: D for vector data, [C, H, W] for images (as a tuple)."""
    return check_data_shape(raw_config.get("dim"), "corrupt config")


def check_path_encoding(path: Path) -> None:
    """Refuse a path that is not valid UTF-8: safetensors and the figures could not open it later."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise FlowforgeError(f"{os.fsdecode(path).encode('utf-8', 'backslashreplace').decode()}: the path is "
                             "not valid UTF-8; choose a directory name in UTF-8") from None


def check_flow_size(config: TrainConfig, dim: int | tuple[int, ...], max_params: int | None = None) -> None:
    """Refuse ``config``'s model above ``max_params`` parameters, sized without building it for real."""
    check_model_size(lambda: build_flow(config, dim), max_params)


def load_run(run_dir: str | Path, weights: str = BEST_WEIGHTS, *, max_params: int | None = None,
             device: str = "cpu") -> tuple[Flow, TrainConfig, dict[str, Any]]:
    """The trained flow of a run (best weights by default) on ``device`` (``auto``: CUDA when
    available; a run trained on a GPU loads on a CPU), its config and the config file's extras.

    The directory is untrusted: its config is checked and the model sized (refused above
    ``max_params`` parameters, by default ``--max-params``'s limit) before anything is built, and the weights must match the model.
    """
    run_dir = Path(run_dir)
    check_path_encoding(run_dir)
    if not run_dir.is_dir():
        raise no_run_directory(run_dir)
    raw = read_json(run_dir / CONFIG)
    if "train" not in raw or "dim" not in raw:
        raise FlowforgeError(f"{run_dir / CONFIG}: corrupt, lacks 'train' or 'dim'")
    config = TrainConfig.from_dict(raw["train"], source=str(run_dir / CONFIG), version=raw.get("config_version", 1))
    dim = check_data_shape(raw["dim"], str(run_dir / CONFIG))
    check_flow_size(config, dim, max_params)
    flow = build_flow(config, dim).to(dtype=resolve_dtype(config.dtype))  # the weights' dtype
    path = run_dir / weights
    writer = None if path.is_file() else active_writer(run_dir)
    if writer is not None:
        raise FlowforgeError(f"{run_dir}: still being trained by another flowforge process ({writer}); its "
                             "weights are written at its first evaluation")
    check_weights_file_size(path, flow.state_dict())
    tensors, _ = load_tensors(path)
    if weights != BEST_WEIGHTS:  # a full checkpoint keeps the model under "model."
        tensors = split_prefix(tensors, "model.")
    load_weights(flow, tensors, path)
    check_buffers(flow, path)
    return flow.to(resolve_device(device)).eval(), config, raw
