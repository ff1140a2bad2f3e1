"""How good is q as a sampler of p? Diagnostics from importance weights w = p̃(x) / q(x), x ~ q.

    ELBO = E_q[log w] ≤ log Z,    Ẑ = mean(w),    ESS / n = (Σw)² / (n Σw²)  (Kish),
    SE(log Ẑ) ≈ sd(w) / (√n · mean(w))  (delta method),    KL(q‖p) = log Z − ELBO.

Pareto-k̂ (Vehtari et al., "Pareto Smoothed Importance Sampling", arXiv:1507.02646): the shape of a
generalized Pareto fitted to the largest weights; k̂ < 0.7 means the weights' tail is light
enough for the estimates to be trusted, k̂ ≥ 0.7 that q misses mass of p.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from flowforge.checks import whole_number
from flowforge.errors import FlowforgeError, warn
from flowforge.nets import evaluation_mode
from flowforge.variational.targets import checked_log_prob

PARETO_K_WARNING = 0.7  # above this the importance-sampling estimates are unreliable (PSIS, §3)
EVAL_DRAWS = 20_000  # draws behind every reported diagnostic
ESS_WARNING = 0.01  # an ESS per draw below this: a handful of draws carry the weights (warned of)
MISSED_MASS_STDERRS = 5  # a known log Z further than this from the estimate: mass q never draws from


def generalized_pareto_shape(exceedances: Tensor) -> float:
    """The shape k of a generalized Pareto fitted to positive ``exceedances`` (1-D) by Zhang & Stephens'
    empirical-Bayes estimator (Technometrics 51, 2009; PSIS, arXiv:1507.02646, appendix), then
    pulled towards 0.5 by PSIS's weakly informative prior (weight 10 against n).

    The GPD is written with θ = −k/σ: for each of m candidate θ on a grid, k(θ) = mean log(1 − θx)
    and the profile log-likelihood is n (log(−θ/k) − k − 1); θ̂ is the posterior mean over the grid.

    >>> import torch
    >>> from flowforge.variational.diagnostics import generalized_pareto_shape
    >>> u = torch.rand(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> round(generalized_pareto_shape(u ** -0.5 - 1), 1)   # a Pareto tail of shape 0.5
    0.5
    """
    x = exceedances.double().sort().values
    n = len(x)
    if n < 5 or float(x[-1]) <= 0:
        return -math.inf  # no tail at all: the weights are (nearly) equal
    m = 30 + int(math.sqrt(n))
    quartile = x[max(0, int(n / 4 + 0.5) - 1)].clamp_min(1e-300)
    j = torch.arange(1, m + 1, dtype=torch.float64)
    theta = 1 / x[-1] + (1 - torch.sqrt(m / (j - 0.5))) / (3 * quartile)
    k = torch.log1p(-theta[:, None] * x[None, :]).mean(1)   # k(θ) for each candidate
    profile = n * (torch.log(-theta / k) - k - 1)
    weights = torch.softmax(profile, 0)
    theta_hat = float((theta * weights).sum())
    k_hat = float(torch.log1p(-theta_hat * x).mean())
    return (n * k_hat + 10 * 0.5) / (n + 10)


def pareto_k(log_weights: Tensor) -> float:
    """PSIS's k̂ of importance weights: the GPD shape of the M = min(n/5, 3√n) largest weights'
    exceedances over the next largest (the fit is scale-free, so weights are rescaled by their max)."""
    log_w = log_weights.double().sort().values
    n = len(log_w)
    tail = int(min(n / 5, 3 * math.sqrt(n)))
    if tail < 5:
        return math.nan
    w = torch.exp(log_w - log_w[-1])
    return generalized_pareto_shape(w[-tail:] - w[-tail - 1])


def importance_summary(log_weights: Tensor, log_z: float | None = None) -> dict[str, float]:
    """ELBO, log Ẑ and its standard error, Kish ESS per draw and Pareto-k̂ from log-weights (and the
    KL(q‖p) = log Z − ELBO and log Ẑ − log Z when the true ``log_z`` is known).

    >>> import torch
    >>> from flowforge.variational import importance_summary
    >>> s = importance_summary(torch.zeros(1000) + 1.5)
    >>> s["log_z"], s["elbo"], s["ess_per_draw"], s["log_z_stderr"]
    (1.5, 1.5, 1.0, 0.0)
    """
    log_w = log_weights.double()
    finite = torch.isfinite(log_w)
    n = len(log_w)
    scaled = torch.exp(log_w - log_w.max())  # in (0, 1]: no overflow
    mean = scaled.mean()
    summary = {
        "elbo": float(log_w.mean()) if bool(finite.all()) else -math.inf,
        "log_z": float(torch.logsumexp(log_w, 0) - math.log(n)),
        "log_z_stderr": float(scaled.std(unbiased=True) / (math.sqrt(n) * mean)),
        "ess_per_draw": float(scaled.sum() ** 2 / (n * (scaled ** 2).sum())),
        "pareto_k": pareto_k(log_w),
        "draws": n,
    }
    if log_z is not None:
        summary["true_log_z"] = log_z
        summary["kl"] = log_z - summary["elbo"]
    return summary


def log_weights(flow, target: Callable, n: int = EVAL_DRAWS, context: Tensor | None = None,
                generator: torch.Generator | None = None, batch: int = 8192) -> tuple[Tensor, Tensor]:
    """(x ~ q, log w = log p̃(x) − log q(x)) for ``n`` draws (each context row gets ``n`` draws)."""
    xs, ws = [], []
    with torch.no_grad(), evaluation_mode(flow):
        for start in range(0, n, batch):
            x, log_q = flow.sample_and_log_prob(min(batch, n - start), context=context, generator=generator)
            flat = x.reshape(-1, x.shape[-1])
            rows = None if context is None else context.expand(*x.shape[:-1], context.shape[-1]).reshape(
                -1, context.shape[-1])
            ws.append(checked_log_prob(target, flat, rows).reshape(log_q.shape) - log_q)
            xs.append(x)
    return torch.cat(xs), torch.cat(ws)


def diagnose(flow, target, n: int = EVAL_DRAWS, generator: torch.Generator | None = None,
             context: Tensor | None = None) -> dict[str, float]:
    """:func:`importance_summary` of ``n`` fresh draws, plus the mode coverage where the target
    marks its modes. With a (K, C) ``context`` each row gets n / K draws and the summaries are
    averaged over the rows (each row has its own log Z)."""
    if context is not None:
        _, log_w = log_weights(flow, target, max(2, n // len(context)), context=context, generator=generator)
        rows = [importance_summary(log_w[:, k]) for k in range(len(context))]
        return {**{key: sum(r[key] for r in rows) / len(rows) for key in rows[0]},
                "draws": sum(r["draws"] for r in rows)}
    x, log_w = log_weights(flow, target, n, generator=generator)
    summary = importance_summary(log_w, getattr(target, "log_z", None))
    if getattr(target, "modes", None) is not None:
        summary["modes_covered"] = mode_coverage(x, target.modes, getattr(target, "mode_mass", None))
    return summary


def warn_if_unreliable(summary: dict) -> None:
    """Warn when the Pareto k̂ of the importance weights says they cannot be trusted
    (k̂ ≥ :data:`PARETO_K_WARNING`: their variance is effectively infinite), or when a few draws
    carry all the weight (ESS per draw below :data:`ESS_WARNING`; k̂, fitted to those few, can miss it);
    else, for a target of known modes or log Z, when q misses some of them."""
    if summary["pareto_k"] >= PARETO_K_WARNING:
        warn(f"Pareto k-hat of the importance weights is {summary['pareto_k']:.2f} (≥ {PARETO_K_WARNING}): "
             "q misses mass of the target, so log Z and resampled draws are unreliable")
    elif summary.get("ess_per_draw", 1.0) < ESS_WARNING:
        draws = summary.get("draws")
        carried = f"{summary['ess_per_draw'] * draws:.1f} of {draws}" if draws else f"{summary['ess_per_draw']:.2g} per"
        warn(f"the importance weights' effective sample size is {carried} draws: q misses where the target keeps "
             "its mass, so log Z and resampled draws are unreliable")
    else:
        _warn_of_missed_mass(summary)


def _warn_of_missed_mass(summary: dict) -> None:
    """Where the target's log Z or its modes are known, warn of mass q never draws from (a dropped
    mode): the weights cannot show it (ESS ≈ 1, k̂ low on the modes q covers)."""
    if summary.get("modes_covered", 1.0) < 1.0:
        warn(f"q covers {summary['modes_covered']:.0%} of the target's modes: its draws miss the others, so log Z "
             "and resampled draws leave their mass out (fit longer, or with --objective forward-kl)")
    elif "true_log_z" in summary and summary.get("log_z_stderr", 0) > 0:
        off = (summary["log_z"] - summary["true_log_z"]) / summary["log_z_stderr"]
        if abs(off) > MISSED_MASS_STDERRS:
            warn(f"the log Z estimate {summary['log_z']:.4f} lies {abs(off):.0f} standard errors from the target's "
                 f"{summary['true_log_z']:.4f}: q misses mass of the target that its weights cannot show")


def mode_coverage(x: Tensor, modes: Tensor, mass: Tensor | None = None, share: float = 0.2) -> float:
    """The fraction of the target's modes that q covers: a mode counts when at least ``share`` of
    the draws p would give it (its ``mass``, p's share; 1/M each when None) fall nearest to it.

    >>> import torch
    >>> from flowforge.variational.diagnostics import mode_coverage
    >>> mode_coverage(torch.tensor([[0.0, 0.1], [0.1, 0.0]]), torch.tensor([[0.0, 0.0], [5.0, 5.0]]))
    0.5
    """
    nearest = torch.cdist(x.double(), modes.double().to(x.device)).argmin(1)
    counts = torch.bincount(nearest, minlength=len(modes)).double()
    expected = len(x) * (torch.full((len(modes),), 1 / len(modes)) if mass is None else mass.double().cpu())
    return float((counts.cpu() >= share * expected).double().mean())


def _draw_count(n) -> int:
    """``n`` as a positive int (NumPy and one-element torch integers too; not a bool or a float)."""
    try:
        return whole_number(n, "n")
    except ValueError:
        raise FlowforgeError(f"resample: n={n!r}; give the number of draws to return, a positive integer") from None


def resample(x: Tensor, log_w: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws from x with replacement, each with probability ∝ w (sampling-importance
    resampling, Rubin 1988): approximately from p when the ESS is large. As :func:`log_weights`
    gives them: x (N, D) and log w (N,), or for K conditions x (N, K, D) and log w (N, K), each
    condition's column resampled on its own into (n, K, D). A log weight of −inf is no weight.

    >>> import torch
    >>> from flowforge.variational import resample
    >>> resample(torch.tensor([[0.0], [1.0]]), torch.tensor([0.0, -float("inf")]), 3).flatten().tolist()
    [0.0, 0.0, 0.0]
    """
    if log_w.dim() not in (1, 2) or tuple(x.shape[:log_w.dim()]) != tuple(log_w.shape) or x.dim() != log_w.dim() + 1:
        raise FlowforgeError(f"resample: draws of shape {tuple(x.shape)} and log weights of shape "
                             f"{tuple(log_w.shape)} do not match (log_weights gives (N, D) and (N,), or "
                             "(N, K, D) and (N, K) for K conditions)")
    n = _draw_count(n)
    if bool((torch.isnan(log_w) | torch.isposinf(log_w)).any()):
        raise FlowforgeError("resample: a log weight is NaN or +inf (the target or q at a draw); only finite "
                             "values and -inf (no weight) can be resampled")
    if not bool(torch.isfinite(log_w).any(0).all()):
        raise FlowforgeError("resample: every draw has zero weight (log w = -inf)" +
                             (" for some condition" if log_w.dim() == 2 else ""))
    probs = torch.softmax(log_w.double(), 0)
    if log_w.dim() == 1:
        return x[torch.multinomial(probs, n, replacement=True, generator=generator)]
    index = torch.multinomial(probs.T, n, replacement=True, generator=generator)  # (K, n)
    return x[index.T, torch.arange(log_w.shape[1], device=x.device)]
