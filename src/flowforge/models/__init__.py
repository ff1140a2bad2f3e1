"""Model builders: each returns a :class:`flowforge.distributions.Flow`."""

from __future__ import annotations

from typing import Any, Callable

from flowforge.distributions import Flow
from flowforge.models.ffjord import FFJORD, CNFFlow
from flowforge.models.realnvp import RealNVP

MODELS: dict[str, Callable[..., Flow]] = {"realnvp": RealNVP, "ffjord": FFJORD}


def build_model(name: str, dim: int, **options: Any) -> Flow:
    """Build a registered model by name, e.g. ``build_model("realnvp", 2, hidden=64)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    return MODELS[name](dim, **options)


__all__ = ["RealNVP", "FFJORD", "CNFFlow", "MODELS", "build_model"]
