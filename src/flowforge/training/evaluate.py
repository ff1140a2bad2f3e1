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
from flowforge.nets import evaluation_mode
from flowforge.training.device import dtype_name, flow_device
from flowforge.transforms import Standardize
from flowforge.transforms.standardize import CORRELATION_RIDGE

DEQUANTIZATION_SEED = 0  # evaluation noise is fixed, so repeated evaluations of the same weights agree
IMAGE_BATCH = 256  # images per evaluation batch (convolutional flows hold large activations)


def log_prob(flow: Flow, points: np.ndarray | torch.Tensor, batch_size: int = 8192, *,
             report: bool = True, context: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """log p(x) (or log p(x | c), one condition per point) of each point in data units, in the
    flow's precision (float32, or float64 for a float64 flow): finite or −inf for every finite
    point, never NaN; a point holding NaN (a missing value) gets NaN, as ``flow.log_prob`` gives.

    Points are converted to the flow's precision batch by batch. A point with a value beyond its
    range (float32's ±3.4e38), or one the flow cannot score (its arithmetic overflows to NaN), gets
    −inf: its density is below anything that precision represents. With ``report`` each kind is
    told in one warning line.
    """
    x = torch.as_tensor(points)
    parts, counts = [], {"overflow": 0, "unscored": 0, "missing": 0}
    with torch.inference_mode(), evaluation_mode(flow):
        for chunk, conditions in zip(x.split(batch_size), _chunks(context, len(x), batch_size)):
            parts.append(_finite_or_minus_inf(flow, chunk, counts, conditions))
    if report and counts["missing"]:
        warn(f"{counts['missing']} of {len(x)} points hold NaN (a missing value); their log-density is NaN")
    precision = flow_device(flow)[1]
    name = dtype_name(precision)
    if report and counts["overflow"]:
        warn(f"{counts['overflow']} of {len(x)} points hold values beyond {name}'s range "
             f"(±{torch.finfo(precision).max:.3g}); their log-density is reported as -inf")
    if report and counts["unscored"]:
        warn(f"{counts['unscored']} of {len(x)} points could not be scored (the flow's {name} arithmetic "
             "overflows there); their log-density is reported as -inf")
    return torch.cat(parts) if parts else torch.empty(0)


def _chunks(context, rows: int, batch_size: int):
    """The conditions of each batch of points (None for each, without a context)."""
    if context is None:
        return [None] * max(1, -(-rows // batch_size))
    return torch.as_tensor(context).split(batch_size)


def _finite_or_minus_inf(flow: Flow, chunk: torch.Tensor, counts: dict[str, int],
                         conditions: torch.Tensor | None = None) -> torch.Tensor:
    device, dtype = flow_device(flow)
    precision = torch.float64 if dtype == torch.float64 else torch.float32  # the flow's own
    narrow = chunk.to(precision)
    fits = torch.isfinite(narrow).reshape(len(narrow), -1).all(1)
    missing = torch.isnan(chunk.reshape(len(chunk), -1)).any(1) if chunk.is_floating_point() else \
        torch.zeros(len(chunk), dtype=torch.bool)
    values = torch.full((len(narrow),), -math.inf, dtype=precision)
    conditions = None if conditions is None else conditions.to(device, dtype)
    if bool(fits.all()):
        values = _scored(flow, narrow.to(device, dtype), counts, conditions).cpu().to(precision)
    else:
        flow.check_event(narrow.to(dtype))  # the whole chunk's shape, before some of its rows are set aside
        if bool(fits.any()):
            values[fits] = _scored(flow, narrow[fits].to(device, dtype), counts,
                                   None if conditions is None else conditions[fits.to(device)]).cpu().to(precision)
    unscored = torch.isnan(values) | (values == math.inf)
    counts["overflow"] += int((~fits & ~missing).sum())
    counts["missing"] += int(missing.sum())
    counts["unscored"] += int(unscored.sum())
    return values.masked_fill(unscored, -math.inf).masked_fill(missing, math.nan)


def _scored(flow: Flow, x: torch.Tensor, counts: dict[str, int], context: torch.Tensor | None = None) -> torch.Tensor:
    """``flow.log_prob(x)``, its overflow warnings counted as unscored points; when an ODE solver
    gives up on the batch (torchdiffeq asserts "underflow in dt" where the dynamics overflow), its
    halves are scored apart and a point that fails alone is NaN."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LogProbOverflowWarning)
            values = flow.log_prob(x, context)
    except AssertionError:
        if len(x) == 1:
            return torch.full((1,), math.nan)
        half = len(x) // 2
        first, second = (None, None) if context is None else (context[:half], context[half:])
        return torch.cat([_scored(flow, x[:half], counts, first), _scored(flow, x[half:], counts, second)])
    for record in caught:
        if isinstance(record.message, LogProbOverflowWarning):
            counts["unscored"] += record.message.count
        else:  # not ours to judge: pass it on
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    return values


def discrete_log_prob(flow: Flow, images: np.ndarray | torch.Tensor, batch_size: int = IMAGE_BATCH,
                      seed: int = DEQUANTIZATION_SEED, context: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Each quantised image's dequantisation bound on log P(x) (or log P(x | c)) in nats, the flow's
    ``discrete_log_prob`` with fixed noise keyed on ``seed`` and the image's own pixels: an image's
    score does not depend on the images beside it or on its position among them."""
    device, dtype = flow_device(flow)
    x = torch.as_tensor(images, dtype=dtype)
    with torch.inference_mode(), evaluation_mode(flow):
        return torch.cat([flow.discrete_log_prob(chunk.to(device), seed,
                                                 None if c is None else c.to(device, dtype)).cpu()
                          for chunk, c in zip(x.split(batch_size), _chunks(context, len(x), batch_size))])


def gaussian_baseline_nll(train: np.ndarray, test: np.ndarray, train_context: np.ndarray | None = None,
                          test_context: np.ndarray | None = None) -> float:
    """The test NLL (nats, data units) of a full-covariance Gaussian fitted by maximum likelihood to
    the training rows: the score a flow must beat to have learned more than a mean and a covariance.
    With conditions its mean is linear in them (least squares on [c, 1]: one mean per class for
    one-hot labels) and its covariance that of the residuals.

    >>> import numpy as np
    >>> from flowforge.training.evaluate import gaussian_baseline_nll
    >>> rng = np.random.default_rng(0); c = rng.normal(size=(4000, 1)); x = 3 * c + rng.normal(size=(4000, 1))
    >>> nll = gaussian_baseline_nll(x[:2000], x[2000:], c[:2000], c[2000:])
    >>> bool(abs(nll - 0.5 * np.log(2 * np.pi * np.e)) < 0.05), gaussian_baseline_nll(x[:2000], x[2000:]) > 2.5  # N(3c, 1)
    (True, True)
    """
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    design = np.ones((len(train), 1)) if train_context is None else _with_intercept(train_context)
    weights = np.linalg.lstsq(design, train, rcond=None)[0]  # without conditions: the mean
    residuals = train - design @ weights
    cov = np.atleast_2d(residuals.T @ residuals / len(train))
    # in each column's own scale: a ridge (against a singular covariance) then weighs alike on a
    # column of 10⁻³ and one of 10³, and the figure does not move with the data's units
    spread = np.sqrt(np.diag(cov))
    spread[spread == 0] = 1.0
    correlation = cov / np.outer(spread, spread) + CORRELATION_RIDGE * np.eye(len(cov))
    logdet = np.linalg.slogdet(correlation)[1] + 2 * np.log(spread).sum()
    centred = test - (np.ones((len(test), 1)) if test_context is None else _with_intercept(test_context)) @ weights
    centred = centred / spread
    mahalanobis = np.einsum("ij,ij->i", centred, np.linalg.solve(correlation, centred.T).T)
    return float(0.5 * (mahalanobis.mean() + logdet + len(cov) * math.log(2 * math.pi)))


def _with_intercept(context: np.ndarray) -> np.ndarray:
    return np.column_stack([np.asarray(context, np.float64), np.ones(len(context))])


def standardization_log_scale(flow: Flow) -> float:
    """Σ log std of the flow's Standardize layers (0 when the data were not standardised)."""
    return sum(float(m.std.log().sum()) for m in flow.modules() if isinstance(m, Standardize))


def nll_summary(flow: Flow, points: np.ndarray | torch.Tensor, metrics: tuple[str, ...] = (), *,
                report: bool = True, context: np.ndarray | torch.Tensor | None = None) -> dict[str, float]:
    """Mean negative log-likelihood of ``points``.

    ``nll`` is in the standardised coordinates the model trains in (the book's loss, the
    scale of the published moons figures); ``nll_data`` is in the data's own units;
    since log p_std(u) = log p(x) + Σ log std, they differ by that constant. ``nll_per_dim`` is ``nll`` / D.

    ``nll_stderr`` is the standard error of ``nll`` (None for a single point).

    ``metrics`` are the model spec's (:attr:`flowforge.models.specs.ModelSpec.metrics`).
    With ``"bits_per_dim"`` (a flow over quantised images) both are the discrete NLL
    bound in nats per image, −log p(dequantised x) + D·log 2^bits with fixed noise, and
    ``bits_per_dim`` = (NLL_continuous + D·log 2^bits) / (D·ln 2) is added.

    With ``"nfe"`` (a continuous-time flow) ``nfe`` is added: the evaluations of f that
    the exact-trace solves of this evaluation took (one solve per batch of 8192 points).

    With ``context`` (one condition per point) every figure is of log p(x | c).
    """
    discrete = "bits_per_dim" in metrics
    counter = flow.cnf.nfe if "nfe" in metrics else None
    eval_nfe_before = counter.eval if counter is not None else 0
    lp = discrete_log_prob(flow, points, context=context) if discrete else \
        log_prob(flow, points, report=report, context=context)
    nll_data = float(-lp.mean())
    nll = nll_data - standardization_log_scale(flow)
    dim = int(np.prod(tuple(points.shape[1:])))
    summary = {"nll": nll, "nll_data": nll_data, "nll_per_dim": nll / dim,
               "nll_stderr": float(lp.std() / math.sqrt(len(lp))) if len(lp) > 1 else None,  # JSON has no NaN
               "n": len(lp)}
    if discrete:
        summary["bits_per_dim"] = nats_to_bits_per_dim(nll_data, dim)
    if counter is not None:
        summary["nfe"] = counter.eval - eval_nfe_before
    return summary
