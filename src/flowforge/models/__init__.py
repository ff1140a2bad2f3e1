"""Model builders: each returns a :class:`flowforge.distributions.Flow`."""

from __future__ import annotations

from typing import Any, Callable

from flowforge.distributions import Flow
from flowforge.models.ffjord import FFJORD, CNFFlow
from flowforge.models.glow import Glow
from flowforge.models.image_flow import ImageFlow
from flowforge.models.nsf import MAF, NSF
from flowforge.models.realnvp import RealNVP
from flowforge.models.realnvp_image import RealNVPImage

MODELS: dict[str, Callable[..., Flow]] = {"realnvp": RealNVP, "ffjord": FFJORD, "glow": Glow,
                                          "realnvp-image": RealNVPImage, "nsf": NSF, "maf": MAF}
IMAGE_MODELS = ("glow", "realnvp-image")  # builders that take a (C, H, W) shape instead of a dimension


def build_model(name: str, dim: int | tuple[int, ...], **options: Any) -> Flow:
    """Build a registered model by name, e.g. ``build_model("realnvp", 2, hidden=64)`` or
    ``build_model("glow", (1, 8, 8), steps=4)``: vector models take the dimension, image models the shape."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    if isinstance(dim, (tuple, list)) and name not in IMAGE_MODELS:
        raise ValueError(f"{name} models vectors, not images of shape {tuple(dim)}; "
                         f"choose from {', '.join(IMAGE_MODELS)}")
    return MODELS[name](dim, **options)


__all__ = ["RealNVP", "NSF", "MAF", "FFJORD", "CNFFlow", "Glow", "RealNVPImage", "ImageFlow", "MODELS", "IMAGE_MODELS",
           "build_model"]
