"""Likelihood metrics in nats (and bits per dimension for images), computed in batches without autograd."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from flowforge.distributions.dequantization import nats_to_bits_per_dim
from flowforge.distributions import Flow
from flowforge.distributions.flow import LogProbOverflowWarning
from flowforge.errors import warn
from flowforge.training.device import flow_device
from flowforge.transforms import Standardize

DEQUANTIZATION_SEED = 0  # evaluation noise is fixed, so repeated evaluations of the same weights agree
IMAGE_BATCH = 256  # images per evaluation batch (convolutional flows hold large activations)


def log_prob(flow: Flow, points: np.ndarray | torch.Tensor, batch_size: int = 8192, *,
             report: bool = True) -> torch.Tensor:
    """log p(x) of each point in data units: finite or −inf for every finite point, never NaN.

    Points are converted to float32 batch by batch. A point with a value beyond float32's range,
    or one the flow cannot score (its arithmetic overflows to NaN), gets −inf: its density is
    below anything float32 represents. With ``report`` each kind is told in one warning line.
    """
    x = torch.as_tensor(points)
    parts, counts = [], {"overflow": 0, "unscored": 0}
    with torch.inference_mode():
        for chunk in x.split(batch_size):
            parts.append(_finite_or_minus_inf(flow, chunk, counts))
    if report and counts["overflow"]:
        warn(f"{counts['overflow']} of {len(x)} points hold values beyond float32's range "
             f"(±{torch.finfo(torch.float32).max:.3g}); their log-density is reported as -inf")
    if report and counts["unscored"]:
        warn(f"{counts['unscored']} of {len(x)} points could not be scored (the flow's float32 arithmetic "
             "overflows there); their log-density is reported as -inf")
    return torch.cat(parts) if parts else torch.empty(0)


def _finite_or_minus_inf(flow: Flow, chunk: torch.Tensor, counts: dict[str, int]) -> torch.Tensor:
    device, dtype = flow_device(flow)
    narrow = chunk.to(torch.float64 if dtype == torch.float64 else torch.float32)  # the flow's own precision
    fits = torch.isfinite(narrow).reshape(len(narrow), -1).all(1)
    values = torch.full((len(narrow),), -math.inf)
    if bool(fits.all()):
        values = _scored(flow, narrow.to(device, dtype), counts).cpu()
    elif bool(fits.any()):
        values[fits] = _scored(flow, narrow[fits].to(device, dtype), counts).cpu()
    unscored = torch.isnan(values) | (values == math.inf)
    counts["overflow"] += int((~fits).sum())
    counts["unscored"] += int(unscored.sum())
    return values.masked_fill(unscored, -math.inf)


def _scored(flow: Flow, x: torch.Tensor, counts: dict[str, int]) -> torch.Tensor:
    """``flow.log_prob(x)``, its overflow warnings counted as unscored points; when an ODE solver
    gives up on the batch (torchdiffeq asserts "underflow in dt" where the dynamics overflow), its
    halves are scored apart and a point that fails alone is NaN."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LogProbOverflowWarning)
            values = flow.log_prob(x).float()
    except AssertionError:
        if len(x) == 1:
            return torch.full((1,), math.nan)
        half = len(x) // 2
        return torch.cat([_scored(flow, x[:half], counts), _scored(flow, x[half:], counts)])
    for record in caught:
        if isinstance(record.message, LogProbOverflowWarning):
            counts["unscored"] += record.message.count
        else:  # not ours to judge: pass it on
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    return values


def discrete_log_prob(flow: Flow, images: np.ndarray | torch.Tensor, batch_size: int = IMAGE_BATCH,
                      seed: int = DEQUANTIZATION_SEED) -> torch.Tensor:
    """Each quantised image's dequantisation bound on log P(x) in nats, the flow's ``discrete_log_prob``
    with noise drawn from ``seed`` (one draw per pixel)."""
    device, dtype = flow_device(flow)
    x = torch.as_tensor(images, dtype=dtype)
    generator = torch.Generator(device).manual_seed(seed)
    with torch.inference_mode():
        return torch.cat([flow.discrete_log_prob(chunk.to(device), generator).cpu() for chunk in x.split(batch_size)])


def gaussian_baseline_nll(train: np.ndarray, test: np.ndarray) -> float:
    """The test NLL (nats, data units) of a full-covariance Gaussian fitted by maximum likelihood to
    the training rows: the score a flow must beat to have learned more than a mean and a covariance."""
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    mean = train.mean(0)
    cov = np.atleast_2d(np.cov(train, rowvar=False, bias=True))
    cov += 1e-9 * np.trace(cov) / len(cov) * np.eye(len(cov))  # a constant column would make it singular
    sign, logdet = np.linalg.slogdet(cov)
    centred = test - mean
    mahalanobis = np.einsum("ij,ij->i", centred, np.linalg.solve(cov, centred.T).T)
    return float(0.5 * (mahalanobis.mean() + logdet + len(mean) * math.log(2 * math.pi)))


def standardization_log_scale(flow: Flow) -> float:
    """Σ log std of the flow's Standardize layers (0 when the data were not standardised)."""
    return sum(float(m.std.log().sum()) for m in flow.modules() if isinstance(m, Standardize))


def nll_summary(flow: Flow, points: np.ndarray | torch.Tensor, metrics: tuple[str, ...] = (), *,
                report: bool = True) -> dict[str, float]:
    """Mean negative log-likelihood of ``points``.

    ``nll`` is in the standardised coordinates the model trains in (the book's loss, the
    scale of the published moons figures); ``nll_data`` is in the data's own units;
    since log p_std(u) = log p(x) + Σ log std, they differ by that constant. ``nll_per_dim`` is ``nll`` / D.

    ``metrics`` are the model spec's (:attr:`flowforge.models.specs.ModelSpec.metrics`).
    With ``"bits_per_dim"`` (a flow over quantised images) both are the discrete NLL
    bound in nats per image, −log p(dequantised x) + D·log 2^bits with fixed noise, and
    ``bits_per_dim`` = (NLL_continuous + D·log 2^bits) / (D·ln 2) is added.

    With ``"nfe"`` (a continuous-time flow) ``nfe`` is added: the evaluations of f that
    the exact-trace solves of this evaluation took (one solve per batch of 8192 points).
    """
    discrete = "bits_per_dim" in metrics
    counter = flow.cnf.nfe if "nfe" in metrics else None
    eval_nfe_before = counter.eval if counter is not None else 0
    lp = discrete_log_prob(flow, points) if discrete else log_prob(flow, points, report=report)
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
