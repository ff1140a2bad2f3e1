"""Likelihood metrics in nats (and bits per dimension for images), computed in batches without autograd."""

from __future__ import annotations

import math

import numpy as np
import torch

from flowforge.distributions.dequantization import nats_to_bits_per_dim
from flowforge.distributions import Flow
from flowforge.transforms import Standardize

DEQUANTIZATION_SEED = 0  # evaluation noise is fixed, so repeated evaluations of the same weights agree
IMAGE_BATCH = 256  # images per evaluation batch (convolutional flows hold large activations)


def log_prob(flow: Flow, points: np.ndarray | torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """log p(x) of each point in data units."""
    x = torch.as_tensor(points, dtype=torch.float32)
    with torch.inference_mode():
        return torch.cat([flow.log_prob(chunk) for chunk in x.split(batch_size)])


def discrete_log_prob(flow: Flow, images: np.ndarray | torch.Tensor, batch_size: int = IMAGE_BATCH,
                      seed: int = DEQUANTIZATION_SEED) -> torch.Tensor:
    """Each quantised image's dequantisation bound on log P(x) in nats, the flow's ``discrete_log_prob``
    with noise drawn from ``seed`` (one draw per pixel)."""
    x = torch.as_tensor(images, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        return torch.cat([flow.discrete_log_prob(chunk, generator) for chunk in x.split(batch_size)])


def standardization_log_scale(flow: Flow) -> float:
    """Σ log std of the flow's Standardize layers (0 when the data were not standardised)."""
    return sum(float(m.std.log().sum()) for m in flow.modules() if isinstance(m, Standardize))


def nll_summary(flow: Flow, points: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Mean negative log-likelihood of ``points``.

    ``nll`` is in the standardised coordinates the model trains in (the book's loss, the
    scale of the published moons figures); ``nll_data`` is in the data's own units;
    since log p_std(u) = log p(x) + Σ log std, they differ by that constant. ``nll_per_dim`` is ``nll`` / D.

    For a flow over quantised images (one with ``discrete_log_prob``) both are the discrete NLL
    bound in nats per image, −log p(dequantised x) + D·log 2^bits with fixed noise, and
    ``bits_per_dim`` = (NLL_continuous + D·log 2^bits) / (D·ln 2) is added.

    For a continuous-time flow (one with a ``cnf``) ``nfe`` is added: the evaluations of f that
    the exact-trace solves of this evaluation took (one solve per batch of 8192 points).
    """
    discrete = hasattr(flow, "discrete_log_prob")
    counter = flow.cnf.nfe if hasattr(flow, "cnf") else None
    eval_nfe_before = counter.eval if counter is not None else 0
    lp = discrete_log_prob(flow, points) if discrete else log_prob(flow, points)
    nll_data = float(-lp.mean())
    nll = nll_data - standardization_log_scale(flow)
    dim = int(np.prod(tuple(points.shape[1:])))
    summary = {"nll": nll, "nll_data": nll_data, "nll_per_dim": nll / dim,
               "nll_stderr": float(lp.std() / math.sqrt(len(lp))) if len(lp) > 1 else float("nan"),
               "n": len(lp)}
    if discrete:
        summary["bits_per_dim"] = nats_to_bits_per_dim(nll_data, dim)
    if counter is not None:
        summary["nfe"] = counter.eval - eval_nfe_before
    return summary
