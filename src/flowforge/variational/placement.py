"""Where a user's target keeps its mass, found before a fit, so the flow starts there.

    μ = Σ w̄ᵢ xᵢ,   σ² = Σ w̄ᵢ (xᵢ − μ)²,   w̄ᵢ ∝ p̃(xᵢ) / r(xᵢ),   xᵢ ~ r = Cauchy(μ, σ) per coordinate

by self-normalised importance sampling, the proposal moved onto each estimate in turn (adaptive
importance sampling; Cappé, Guillin, Marin & Robert 2004, "Population Monte Carlo",
doi:10.1198/106186004X12803). It needs only the target's values (no gradient) and covers every mode
its heavy-tailed draws reach. A flow's spline layers act on [−B, B] of the unit scale only and are
the identity beyond, so a target centred at 10, or spread over hundreds, is out of a default flow's
reach; its fixed first layer (Standardize) then takes μ and σ, and the layers after it see unit
scale wherever the target sits.

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

from flowforge.errors import FlowforgeError
from flowforge.variational.targets import checked_log_prob

PLACEMENT_DRAWS = 4096  # target evaluations per round
PROPOSALS = (None, None, None, 4, 4, 4, 4, 4)  # the rounds' proposals: Cauchy to search, then Student-t of 4 dof
TAIL = 0.49  # the proposal's draws stop at tan(0.49π) ≈ 32 scales (a target may overflow further out)
MIN_EFFECTIVE_DRAWS = 10.0  # fewer: the estimate is too thin to move the flow by
IN_REACH = (2.0, 1 / 3, 3.0)  # |μ| up to 2, σ within [1/3, 3]: the unit-scale flow already covers it


def target_placement(target: Callable, dim: int, seed: int, draws: int = PLACEMENT_DRAWS
                     ) -> tuple[Tensor, Tensor] | None:
    """The (location, scale) per coordinate of ``target``'s mass, or None when the unit scale at
    the origin already covers it, or the estimate rests on too few effective draws to trust (the
    target raising or returning NaN far out also leaves the flow where it is: the fit's own check
    then names the target)."""
    loc, scale, generator = torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64), \
        torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # a target drawing from torch's generators leaves the fit's alone
        for dof in PROPOSALS:  # the first rounds may rest on a few draws: they only move the proposal
            try:
                loc, scale, effective = _one_round(target, loc, scale, draws, generator, dof)
            except FlowforgeError:
                return None
    if not effective >= MIN_EFFECTIVE_DRAWS:  # NaN (no finite weight) too
        return None
    if bool((loc.abs() <= IN_REACH[0]).all() and ((scale >= IN_REACH[1]) & (scale <= IN_REACH[2])).all()):
        return None
    return loc.float(), scale.float()


def _one_round(target: Callable, loc: Tensor, scale: Tensor, draws: int, generator: torch.Generator,
               dof: int | None) -> tuple[Tensor, Tensor, float]:
    """Weighted mean and spread of draws of the proposal around ``loc`` at ``scale``: Cauchy (``dof``
    None; truncated at :data:`TAIL`) to search, then Student-t of ``dof`` to refine; the spread kept
    above a quarter of the proposal's, and above half of it when fewer than
    :data:`MIN_EFFECTIVE_DRAWS` carry the weight (one draw near a far mode would otherwise collapse
    it), and the effective number of draws (the proposal stays put when no weight is finite)."""
    if dof is None:
        u = (torch.rand(draws, len(loc), generator=generator, dtype=torch.float64) - 0.5) * (2 * TAIL)
        t = torch.tan(math.pi * u)
        log_r = -torch.log1p(t ** 2).sum(-1)  # up to a constant: the weights self-normalise
    else:  # t = z / sqrt(chi²_dof / dof), all from the seeded generator
        z = torch.randn(draws, len(loc), dof + 1, generator=generator, dtype=torch.float64)
        t = z[..., 0] / (z[..., 1:] ** 2).mean(-1).sqrt()
        log_r = -0.5 * (dof + 1) * torch.log1p(t ** 2 / dof).sum(-1)
    x = loc + scale * t
    with torch.no_grad():
        log_p = checked_log_prob(target, x.float(), name=getattr(target, "name", None)).double()
    weights = torch.softmax(log_p - log_r, dim=0)
    if not bool(torch.isfinite(weights).all()):  # p̃ = 0 (−inf) at every draw
        return loc, scale, math.nan
    mean, effective = weights @ x, float(1 / (weights ** 2).sum())
    spread = (weights @ (x - mean) ** 2).sqrt()
    floor = scale / (2 if effective < MIN_EFFECTIVE_DRAWS else 4)  # a few draws move it, narrow it slowly
    return mean, torch.maximum(spread, floor), effective
