"""Likelihood metrics in nats, computed in batches without autograd."""

from __future__ import annotations

import math

import numpy as np
import torch

from flowforge.distributions import Flow
from flowforge.transforms import Standardize


def log_prob(flow: Flow, points: np.ndarray | torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """log p(x) of each point in data units."""
    x = torch.as_tensor(points, dtype=torch.float32)
    with torch.inference_mode():
        return torch.cat([flow.log_prob(chunk) for chunk in x.split(batch_size)])


def standardization_log_scale(flow: Flow) -> float:
    """Σ log std of the flow's Standardize layers (0 when the data were not standardised)."""
    return sum(float(m.std.log().sum()) for m in flow.modules() if isinstance(m, Standardize))


def nll_summary(flow: Flow, points: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Mean negative log-likelihood of ``points``.

    ``nll`` is in the standardised coordinates the model trains in (the book's loss, the
    scale of the published moons figures); ``nll_data`` is in the data's own units;
    since log p_std(u) = log p(x) + Σ log std, they differ by that constant. ``nll_per_dim`` is ``nll`` / D.
    """
    lp = log_prob(flow, points)
    nll_data = float(-lp.mean())
    nll = nll_data - standardization_log_scale(flow)
    dim = int(np.prod(tuple(points.shape[1:])))
    return {"nll": nll, "nll_data": nll_data, "nll_per_dim": nll / dim,
            "nll_stderr": float(lp.std() / math.sqrt(len(lp))) if len(lp) > 1 else float("nan"),
            "n": len(lp)}
