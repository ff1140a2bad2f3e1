"""Losses that fit a flow q to an unnormalised target p̃ (minimised; x ~ q are reparameterised draws).

    reverse KL:  L = E_q[log q(x) − log p̃(x)] = −ELBO = KL(q‖p) − log Z
    STL:         the same value; the gradient drops the score term E_q[∇_θ log q_θ(x)] (zero in
                 expectation) by evaluating log q with the flow's parameters held fixed
    forward KL:  L = −Σ_i w̄_i log q(x_i),  w̄ = softmax(log p̃(x) − log q(x)) over draws x ~ q
                 (self-normalised importance weights; the draws carry no gradient)

Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", arXiv:1505.05770; Roeder,
Wu & Duvenaud 2017, "Sticking the Landing", arXiv:1703.09194; forward KL by importance weights as in
Müller et al. 2019, "Neural Importance Sampling", arXiv:1808.03856.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from flowforge.variational.targets import checked_log_prob

OBJECTIVES = ("forward-then-jeffreys", "forward-then-stl", "stl", "reverse-kl", "forward-kl", "jeffreys")
WARM_FRACTION = 0.25  # forward-then-stl: the share of the steps fitted by forward KL
JEFFREYS_WARM_FRACTION = 0.1  # forward-then-jeffreys: the same (its Jeffreys phase keeps a forward-KL term)


class _LogProb(nn.Module):
    """``flow.log_prob`` as a module's forward, so :func:`torch.func.functional_call` can run it
    with substituted (detached) parameters."""

    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.flow.log_prob(x, context)


def _target_rows(target: Callable, x: Tensor, context: Tensor | None, differentiable: bool = True) -> Tensor:
    """log p̃ of draws x of shape (n, *B, D) for contexts (*B, C), flattened and reshaped back, finite
    at every draw; ``differentiable``: the loss differentiates it at x (it must carry a gradient)."""
    flat = x.reshape(-1, x.shape[-1])
    rows = None if context is None else context.expand(*x.shape[:-1], context.shape[-1]).reshape(
        -1, context.shape[-1])
    return checked_log_prob(target, flat, rows, fitting=True, differentiable=differentiable).reshape(
        x.shape[:-1])


def reverse_kl(flow, target: Callable, n: int, context: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """E_q[log q(x) − log p̃(x)] by ``n`` reparameterised draws (per context row): −ELBO.

    >>> from flowforge.variational import reverse_kl
    >>> from flowforge.models import RealNVP
    >>> from flowforge.variational.targets import banana
    >>> reverse_kl(RealNVP(2, num_layers=2, hidden=8, depth=1), banana(), 16).shape
    torch.Size([])
    """
    x, log_q = flow.rsample_and_log_prob(n, context=context, generator=generator)
    return (log_q - _target_rows(target, x, context)).mean()


def sticking_the_landing(flow, target: Callable, n: int, context: Tensor | None = None,
                         generator: torch.Generator | None = None) -> Tensor:
    """−ELBO whose gradient is the path derivative only: log q(x) is evaluated with the flow's
    parameters detached, so only the path x = g(z; θ) carries θ's gradient. At q = p the
    gradient of every draw is zero (the estimator's variance vanishes there)."""
    x = flow.rsample(n, context=context, generator=generator)
    frozen = {f"flow.{name}": p.detach() for name, p in flow.named_parameters()}
    log_q = functional_call(_LogProb(flow), frozen, (x, context))
    return (log_q - _target_rows(target, x, context)).mean()


def forward_kl(flow, target: Callable, n: int, context: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """−Σ w̄ log q(x) over ``n`` draws from q (per context row) with self-normalised weights
    w̄ ∝ p̃/q: a consistent estimate of KL(p‖q) − H(p) as n grows, mode-covering."""
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob(n, context=context, generator=generator)
        weights = torch.softmax(_target_rows(target, x, context, differentiable=False) - log_q, dim=0)
    return -(weights * flow.log_prob(x, context)).sum(0).mean()


def jeffreys(flow, target: Callable, n: int, context: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Reverse plus forward KL on the same ``n`` reparameterised draws (per context row):
    −ELBO − Σ w̄ log q(x), x detached for the second term, w̄ = softmax(log p̃ − log q) — the
    symmetrised (Jeffreys) divergence KL(q‖p) + KL(p‖q) up to constants. The reverse term sharpens
    q onto p (the ELBO); the forward term raises q wherever draws find it too low for p (it keeps the
    importance weights bounded, which is what the ESS measures). One sampling pass and one density
    pass per step."""
    x, log_q = flow.rsample_and_log_prob(n, context=context, generator=generator)
    log_w = _target_rows(target, x, context) - log_q
    weights = torch.softmax(log_w.detach(), dim=0)
    return -log_w.mean(0).mean() - (weights * flow.log_prob(x.detach(), context)).sum(0).mean()


def objective_function(name: str, step: int = 0, steps: int = 1, fraction: float | None = None
                       ) -> Callable[..., Tensor]:
    """The loss called ``name`` (one of :data:`OBJECTIVES`) at ``step`` of ``steps`` (or at ``fraction``
    of the run, for a run with a time budget): ``forward-then-jeffreys`` is forward KL for the first
    :data:`JEFFREYS_WARM_FRACTION` of the run (it spreads q over every mode the wide initial q
    reaches), then descends the Jeffreys divergence by alternating steps: reverse KL on odd steps
    (it sharpens q: the ELBO), forward KL on even ones (it keeps the importance weights bounded:
    the ESS), each step the cost of one objective (:func:`jeffreys` takes both on every step, at
    1.7 times a reverse-KL step's cost, measured on a RealNVP of 8 couplings of 2 × 64); ``forward-then-stl`` is forward KL for the first
    :data:`WARM_FRACTION`, then the path-gradient ELBO (which sharpens q)."""
    fraction = step / max(1, steps) if fraction is None else fraction
    if name == "forward-then-jeffreys":
        return forward_kl if fraction < JEFFREYS_WARM_FRACTION or step % 2 == 0 else reverse_kl
    if name == "forward-then-stl":
        return forward_kl if fraction < WARM_FRACTION else sticking_the_landing
    return {"reverse-kl": reverse_kl, "stl": sticking_the_landing, "forward-kl": forward_kl, "jeffreys": jeffreys}[name]
