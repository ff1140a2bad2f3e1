"""Where a user's target keeps its mass, found before a fit, so the flow starts there.

    μ = Σ w̄ᵢ xᵢ,   σ² = Σ w̄ᵢ (xᵢ − μ)²,   w̄ᵢ ∝ p̃(xᵢ) / r(xᵢ),   xᵢ ~ r = Cauchy(μ, σ) per coordinate

by self-normalised importance sampling, the proposal moved onto each estimate in turn (adaptive
importance sampling; Cappé, Guillin, Marin & Robert 2004, "Population Monte Carlo",
doi:10.1198/106186004X12803). It needs only the target's values (no gradient) and covers every mode
its heavy-tailed draws reach. A flow's spline layers act on [−B, B] of the unit scale only and are
the identity beyond (B = 4 by default), so a flow on a Gaussian base puts no more mass past ±B than
the base has there: a target centred at 10, spread over hundreds, or with 5% of its mass past ±4
(N(0, 2²), a banana's arm) is out of a default flow's reach. Its fixed first layer (Standardize)
then takes μ and a scale that brings 99.9% of the mass within ±B, and the layers after it see the
target there wherever it sits.

>>> from flowforge.variational import target_placement
>>> import torch
>>> place = target_placement(lambda x: -0.5 * ((x - 10) ** 2).sum(-1), dim=2, seed=0)
>>> [round(v) for v in place[0].tolist()], [round(v) for v in place[1].tolist()]
([10, 10], [1, 1])
>>> target_placement(lambda x: -0.5 * (x ** 2).sum(-1), dim=2, seed=0) is None   # already in reach
True
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from flowforge.errors import warn
from flowforge.training.device import forked_rng
from flowforge.variational.targets import target_name

PLACEMENT_DRAWS = 4096  # target evaluations per round (before the fit, of the flow's dtype, on its device)
SEARCH_ROUNDS = 16  # Cauchy rounds at most, until MIN_EFFECTIVE_DRAWS carry the weight
REFINE_DOF = (4, 4, 4, 4)  # then rounds of Student-t proposals of these degrees of freedom
TAIL = 0.49  # the Cauchy draws stop at tan(0.49π) ≈ 32 scales (a target may overflow further out)
MIN_EFFECTIVE_DRAWS = 10.0  # fewer: the estimate only moves the proposal
REACH = 4.0  # the default splines' interval [−4, 4] (NSF's bound) ...
REACH_QUANTILE = 0.999  # ... should hold this much of the target's mass, coordinate by coordinate
NARROWEST = 1 / 3  # a spread below this at the unit scale is placed too (the splines' bins would be too coarse)


def target_placement(target: Callable, dim: int, seed: int, draws: int = PLACEMENT_DRAWS,
                     on_lost: Callable[[str], None] = warn, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor] | None:
    """The (location, scale) per coordinate of ``target``'s mass — the scale at least its standard
    deviation, and large enough that 99.9% of the mass lies within ±:data:`REACH` of the location —
    or None when the unit scale at the origin already covers it, or when no round found enough
    effective draws to trust (said to ``on_lost`` when the search had moved out of that reach: a
    far target it did not find). Draws
    where the target is NaN count as no mass; a target that raises on a round's draws is left unplaced.
    The target sees the draws as the flow will give them, of ``dtype`` on ``device``."""
    loc, scale, generator = torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64), \
        torch.Generator().manual_seed(seed)
    def as_the_flow_draws(x: Tensor) -> Tensor:
        return target(x.to(device=device, dtype=dtype))

    # a target drawing from torch's generators (the CPU's, and the device's it runs on) leaves the fit's alone
    with forked_rng(device):
        effective, rounds, extent = 0.0, 0, scale
        while effective < MIN_EFFECTIVE_DRAWS and rounds < SEARCH_ROUNDS:
            estimate = _one_round(as_the_flow_draws, loc, scale, draws, generator, None)
            if estimate is None:
                return None
            (loc, scale, effective, extent), rounds = estimate, rounds + 1
        for dof in REFINE_DOF if effective >= MIN_EFFECTIVE_DRAWS else ():
            estimate = _one_round(as_the_flow_draws, loc, scale, draws, generator, dof)
            if estimate is None:
                return None
            (loc, scale, effective, extent), rounds = estimate, rounds + 1
    in_reach = bool(((loc.abs() + extent) <= REACH).all() and (scale >= NARROWEST).all())
    if not effective >= MIN_EFFECTIVE_DRAWS:
        if not in_reach:
            on_lost(f"could not locate where target {target_name(target)} keeps its mass ({rounds} rounds of {draws} "
                 "draws); the flow starts at the unit scale at the origin")
        return None
    return None if in_reach else (loc, torch.maximum(scale, extent / REACH))  # float64: any flow's dtype takes them


def _one_round(target: Callable, loc: Tensor, scale: Tensor, draws: int, generator: torch.Generator,
               dof: int | None) -> tuple[Tensor, Tensor, float, Tensor] | None:
    """Weighted mean and spread of draws of the proposal around ``loc`` at ``scale`` (Cauchy for
    ``dof`` None, truncated at :data:`TAIL`; else Student-t of ``dof``, with half the draws from a
    wide Cauchy at the origin: a defensive mixture, so modes the search did not land on keep their
    weight), and the effective number of draws behind them. With fewer than
    :data:`MIN_EFFECTIVE_DRAWS` the proposal keeps its scale while the mean moves by more than it
    (searching for far mass) and halves it otherwise (zooming in on narrow mass); with more, the
    spread is kept above a quarter of the proposal's. Last, the weighted :data:`REACH_QUANTILE`
    of each coordinate's distance from the mean. None: the target raised, or returned other
    than one value per draw."""
    wide = torch.ones_like(scale) * float((loc.abs() + scale).max().clamp(min=1.0))
    defensive = 0 if dof is None else draws // 2  # searching, every draw goes where the mass was seen
    x = torch.cat([_draws(loc, scale, draws - defensive, generator, dof),
                   _draws(torch.zeros_like(loc), wide, defensive, generator, None)])
    log_r = _log_density(x, loc, scale, dof) if not defensive else torch.logsumexp(torch.stack(
        [_log_density(x, loc, scale, dof), _log_density(x, 0.0, wide, None)]), 0)
    log_p = _values(target, x)
    if log_p is None:
        return None
    weights = torch.softmax(log_p - log_r, dim=0)
    if not bool(torch.isfinite(weights).all()):  # p̃ = 0 (−inf) at every draw
        return loc, scale, 0.0, scale
    mean, effective = weights @ x, float(1 / (weights ** 2).sum())
    spread, extent = (weights @ (x - mean) ** 2).sqrt(), _weighted_quantile((x - mean).abs(), weights)
    if effective >= MIN_EFFECTIVE_DRAWS:
        return mean, torch.maximum(spread, scale / 4), effective, extent
    searching = bool(((mean - loc).abs() > scale).any())
    return mean, scale if searching else torch.maximum(spread, scale / 2), effective, extent


def _weighted_quantile(values: Tensor, weights: Tensor, level: float = REACH_QUANTILE) -> Tensor:
    """Per column of ``values`` (n, D), the smallest value below which ``level`` of the weight lies."""
    ordered, order = values.sort(dim=0)
    below = weights[order].cumsum(0)
    first = (below < level * below[-1:]).sum(0).clamp(max=len(values) - 1)
    return ordered.gather(0, first[None])[0]


def _draws(loc, scale, n: int, generator: torch.Generator, dof: int | None) -> Tensor:
    """n draws of a product of Cauchy (``dof`` None; truncated at :data:`TAIL` scales) or Student-t
    distributions, from the seeded generator (t = z / sqrt(chi²_dof / dof))."""
    if dof is None:
        u = (torch.rand(n, len(scale), generator=generator, dtype=torch.float64) - 0.5) * (2 * TAIL)
        return loc + scale * torch.tan(math.pi * u)
    z = torch.randn(n, len(scale), dof + 1, generator=generator, dtype=torch.float64)
    return loc + scale * z[..., 0] / (z[..., 1:] ** 2).mean(-1).sqrt()


def _log_density(x: Tensor, loc, scale: Tensor, dof: int | None) -> Tensor:
    """log density of :func:`_draws`' distribution at x (the Cauchy's truncation, the same for every
    Cauchy here, left out: the weights self-normalise)."""
    return torch.distributions.StudentT(1.0 if dof is None else float(dof), loc, scale).log_prob(x).sum(-1)


def _values(target: Callable, x: Tensor) -> Tensor | None:
    """log p̃ at the draws in float64, NaN and +inf counted as no mass (far out, a target may
    overflow where the fit never goes); None when it raises or returns other than (len(x),)."""
    try:
        with torch.no_grad():
            values = target(x)
    except Exception:  # noqa: BLE001 - the fit's own check names a target that fails where q draws
        return None
    if not torch.is_tensor(values) or values.shape != x.shape[:1] or not values.is_floating_point():
        return None
    values = values.detach().double().cpu()
    return torch.where(torch.isnan(values) | torch.isposinf(values), -math.inf, values)
