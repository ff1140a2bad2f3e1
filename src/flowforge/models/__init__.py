"""Model builders: each returns a :class:`flowforge.distributions.Flow`; :mod:`flowforge.models.specs`
describes each family (recipe, input kind, objectives, metrics, figures)."""

from __future__ import annotations

from typing import Any

from flowforge.lazy import lazy_names
from flowforge.models.specs import SPECS, ModelSpec, spec_of

MODELS = tuple(sorted(SPECS))


def build_model(name: str, dim: int | tuple[int, ...], **options: Any):
    """Build a registered model by name, e.g. ``build_model("realnvp", 2, hidden=64)`` or
    ``build_model("glow", (1, 8, 8), steps=4)``: vector models take the dimension, image models the shape."""
    return spec_of(name).build(dim, **options)


__all__ = ["RealNVP", "NSF", "MAF", "FFJORD", "CNFFlow", "Glow", "RealNVPImage", "ImageFlow", "MODELS", "SPECS",
           "ModelSpec", "spec_of", "build_model"]
__getattr__, __dir__ = lazy_names(__name__, {
    "RealNVP": ".realnvp", "NSF": ".nsf", "MAF": ".nsf", "FFJORD": ".ffjord", "CNFFlow": ".ffjord",
    "Glow": ".glow", "RealNVPImage": ".realnvp_image", "ImageFlow": ".image_flow"})
