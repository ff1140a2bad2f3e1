"""Explicit migrations of a saved config.json's ``train`` object to today's format.

Format 1 (no ``config_version`` in config.json) was written before recipes: every trainer
field was recorded, but only the builder options the user gave (and, for RealNVP and FFJORD,
the trainer's own). Its runs were trained on the CPU in float32 without early stopping.
Format 2 had no conditional runs: its runs condition on nothing.
Format 3 recorded every builder option of its day: an option added since (a spec's
``added_options``) takes the value those runs were built with.
"""

from __future__ import annotations

from typing import Any, Callable

from flowforge.errors import FlowforgeError


def _spec(train: dict[str, Any]):
    from flowforge.models.specs import SPECS

    return SPECS.get(train.get("model", "realnvp"))


def _from_version_1(train: dict[str, Any]) -> dict[str, Any]:
    spec = _spec(train)
    unrecorded = dict(spec.unrecorded_options) if spec else {}
    # A run saved before train_noise existed trained without noise, and must resume so.
    defaults = {"train_noise": 0.0, "patience": 0, "device": "cpu", "dtype": "float32", "objective": "mle",
                "recipe": "format-1"}
    return {**defaults, **train, "model_options": {**unrecorded, **train.get("model_options", {})}}


def _from_version_2(train: dict[str, Any]) -> dict[str, Any]:
    return {**train, "context": None, "context_columns": None}


def _from_version_3(train: dict[str, Any]) -> dict[str, Any]:
    spec = _spec(train)
    added = dict(spec.added_options) if spec else {}
    return {**train, "model_options": {**added, **(train.get("model_options") or {})}}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_version_1, 2: _from_version_2,
                                                                     3: _from_version_3}


def migrate_train(train: dict[str, Any], version: Any, source: str) -> dict[str, Any]:
    """``train`` as written by config format ``version``, brought to the current format."""
    from flowforge.training.config import CONFIG_VERSION

    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CONFIG_VERSION:
        raise FlowforgeError(f"{source}: config_version {version!r} is not one this flowforge reads "
                             f"(1 to {CONFIG_VERSION}); a newer flowforge wrote it?")
    while version < CONFIG_VERSION:
        train, version = MIGRATIONS[version](train), version + 1
    return train
