"""A continuous normalizing flow (CNF): an ODE dz/dt = f(z, t) solved with torchdiffeq.

Time runs from the latent (t = 0) to the data (t = T per block). Along a solution the
log-density obeys the instantaneous change of variables, so with the log-det as an extra state

    d/dt [z, ℓ] = [f(z, t), Tr ∂f/∂z],    ℓ(t₁) - ℓ(t₀) = log|det ∂z(t₁)/∂z(t₀)|

solving from T to 0 maps data to latent (``forward``) and from 0 to T maps back (``inverse``).
Two more states can ride along, the penalties of Finlay et al. (2020): ∫‖f‖² dt (kinetic
energy) and ∫‖∂f/∂z‖²_F dt (Jacobian norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from flowforge.transforms.base import Transform, check_context
from flowforge.transforms.divergence import NOISES, divergence, sample_noise

ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP_SOLVERS = ("euler", "midpoint", "heun3", "rk4")
TRACES = ("exact", "hutchinson")


@dataclass
class NFECounter:
    """Evaluations of f since the last ``take()``.

    ``forward``: in solves that track gradients (training); ``backward``: backward passes through
    an evaluation (backpropagation through the solver, or the adjoint solve); ``eval``: in solves
    without gradients (log_prob under no_grad/inference_mode, sampling).
    """
    forward: int = 0
    backward: int = 0
    eval: int = 0

    def take(self) -> dict[str, int]:
        counts = {"nfe_forward": self.forward, "nfe_backward": self.backward, "nfe_eval": self.eval}
        self.forward = self.backward = self.eval = 0
        return counts


def evaluate_field(velocity: nn.Module, t: Tensor, z: Tensor, context: Tensor | None) -> Tensor:
    """f(t, z), or f(t, z, c) for a conditional field: unconditional fields need not take a context."""
    return velocity(t, z) if context is None else velocity(t, z, context)


class _CountBackward(torch.autograd.Function):
    """Identity whose backward adds one to a counter: one backward NFE per evaluation reached."""

    @staticmethod
    def forward(ctx, x: Tensor, counter: NFECounter) -> Tensor:
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        ctx.counter.backward += 1
        return grad, None


class AugmentedDynamics(nn.Module):
    """d/dt of (z, ℓ[, ∫‖f‖², ∫‖J‖²_F]) for one velocity field, set up for one solve.

    The divergence needs autograd even when the caller runs without gradients, so it is
    always computed under ``enable_grad``; when the caller does not track gradients the
    results are detached and no graph outlives the call.
    """

    def __init__(self, velocity: nn.Module, noise: Tensor | None, penalties: bool,
                 counter: NFECounter, tracked: bool, context: Tensor | None = None):
        super().__init__()
        self.velocity = velocity
        self.noise, self.penalties, self.counter, self.tracked = noise, penalties, counter, tracked
        self.context = context
        self.solving = False  # True inside the forward solve; adjoint backward calls come later

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.solving:
            if self.tracked:
                self.counter.forward += 1
            else:
                self.counter.eval += 1
        z = state[0]
        grad = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = evaluate_field(self.velocity, t, z, self.context)
            trace, frobenius = divergence(f, z, self.noise, create_graph=grad)
        if not grad:
            f, trace, frobenius = f.detach(), trace.detach(), frobenius.detach()
        elif f.requires_grad:
            f = _CountBackward.apply(f, self.counter)
        if not self.penalties:
            return f, trace
        return f, trace, (f * f).sum(dim=1), frobenius


class Integrated(NamedTuple):
    """A solve's end state: z, log|det ∂z(t₁)/∂z(t₀)|, and ∫‖f‖² dt, ∫‖J‖²_F dt over |t₁ - t₀| (or None)."""
    z: Tensor
    log_abs_det: Tensor
    kinetic: Tensor | None
    jacobian: Tensor | None


class CNF(Transform):
    """Continuous normalizing flow: ``forward`` (data → latent) solves the ODE from T·L to 0,
    ``inverse`` (latent → data) from 0 to T·L, where L = len(velocities) blocks of duration T.

    Block k owns the times [kT, (k+1)T] and receives the global time. The divergence is exact
    unless ``trace="hutchinson"`` and the module is training with gradients on (one noise draw
    per block solve); evaluation (eval mode, no_grad, inference_mode) is always exact.
    Works inside ``torch.inference_mode()``: the solve steps out of it, since the trace needs autograd.
    A context, when the velocity fields take one (``context_dim`` > 0), is held fixed along the solve.

    Chen et al. 2018, "Neural Ordinary Differential Equations", arXiv:1806.07366; Grathwohl et al.
    2019, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models",
    arXiv:1810.01367.

    >>> import torch
    >>> from flowforge.transforms.cnf import CNF
    >>> from flowforge.transforms.dynamics import ConcatSquashMLP
    >>> cnf = CNF(ConcatSquashMLP(2, hidden=16, depth=2))
    >>> z, log_abs_det = cnf(torch.randn(8, 2))
    """

    def __init__(self, velocities: nn.Module | Sequence[nn.Module], time: float = 1.0,
                 solver: str = "dopri5", atol: float = 1e-5, rtol: float = 1e-5, solver_steps: int = 20,
                 trace: str = "exact", noise: str = "gaussian", adjoint: bool = False):
        super().__init__()
        if solver not in ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS)}")
        if trace not in TRACES:
            raise ValueError(f"unknown trace {trace!r}; choose from {', '.join(TRACES)}")
        if noise not in NOISES:
            raise ValueError(f"unknown noise {noise!r}; choose from {', '.join(NOISES)}")
        if not (time > 0 and atol > 0 and rtol > 0 and solver_steps >= 1):
            raise ValueError("a CNF needs time > 0, atol > 0, rtol > 0 and solver_steps >= 1")
        blocks = [velocities] if isinstance(velocities, nn.Module) else list(velocities)
        if not blocks:
            raise ValueError("a CNF needs at least one velocity field")
        self.velocities = nn.ModuleList(blocks)
        self.time, self.solver, self.atol, self.rtol = float(time), solver, atol, rtol
        self.solver_steps, self.trace, self.noise, self.adjoint = solver_steps, trace, noise, adjoint
        self.context_dim = getattr(blocks[0], "context_dim", 0)
        self.nfe = NFECounter()

    @property
    def total_time(self) -> float:
        """T·L: the data sit at this time, the latent at 0."""
        return self.time * len(self.velocities)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, log_abs_det, _, _ = self.integrate(x, self.total_time, 0.0, context=context)
        return z, log_abs_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, log_abs_det, _, _ = self.integrate(z, 0.0, self.total_time, context=context)
        return x, log_abs_det

    def velocity(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        """f(z, t) at global times t: a scalar, or one per sample (each taken from its block's
        network; every block sees the whole batch, so each step uses every parameter, as
        DistributedDataParallel requires)."""
        context = check_context(context, self.context_dim, z.shape[0], "CNF")
        if len(self.velocities) == 1:
            return evaluate_field(self.velocities[0], t, z, context)
        block = (t / self.time).floor().long().clamp(0, len(self.velocities) - 1)
        if t.dim() == 0:
            return evaluate_field(self.velocities[int(block)], t, z, context)
        out = torch.zeros_like(z)
        for k, velocity in enumerate(self.velocities):
            out = torch.where((block == k).unsqueeze(1), evaluate_field(velocity, t, z, context), out)
        return out

    def integrate(self, y: Tensor, t0: float, t1: float, penalties: bool = False,
                  context: Tensor | None = None) -> Integrated:
        """Solve from global time t0 to t1 (either direction) through every block in between.

        >>> import torch
        >>> from flowforge.transforms.cnf import CNF
        >>> from flowforge.transforms.dynamics import ConcatSquashMLP
        >>> cnf = CNF(ConcatSquashMLP(2, hidden=8, depth=1))
        >>> halfway = cnf.integrate(torch.randn(3, 2), 1.0, 0.5).z
        """
        context = check_context(context, self.context_dim, y.shape[0], "CNF")
        tracked = torch.is_grad_enabled()
        use_hutchinson = self.trace == "hutchinson" and self.training and tracked
        # The trace needs autograd, which inference mode forbids: step out of it, keep the
        # caller's grad mode, and work on a normal copy of an inference tensor.
        with torch.inference_mode(False), torch.set_grad_enabled(tracked):
            if y.is_inference():
                y = y.clone()
            if context is not None and context.is_inference():
                context = context.clone()
            zeros = y.new_zeros(y.shape[0])
            state = (y, zeros, zeros, zeros) if penalties else (y, zeros)
            for k, start, end in self._segments(t0, t1):
                noise = sample_noise(y, self.noise) if use_hutchinson else None
                dynamics = AugmentedDynamics(self.velocities[k], noise, penalties, self.nfe, tracked, context)
                state = self._solve(dynamics, state, start, end)
        if not penalties:
            return Integrated(state[0], state[1], None, None)
        direction = 1.0 if t1 >= t0 else -1.0  # penalties integrate |dt|: positive either way
        return Integrated(state[0], state[1], direction * state[2], direction * state[3])

    def _segments(self, t0: float, t1: float) -> list[tuple[int, float, float]]:
        """(block, start, end) pieces of [t0, t1] in the order the solve visits them."""
        lo, hi = min(t0, t1), max(t0, t1)
        pieces = [(k, max(lo, k * self.time), min(hi, (k + 1) * self.time)) for k in range(len(self.velocities))]
        pieces = [(k, a, b) for k, a, b in pieces if b > a]
        return pieces if t1 >= t0 else [(k, b, a) for k, a, b in reversed(pieces)]

    def _solve(self, dynamics: AugmentedDynamics, state: tuple[Tensor, ...], start: float,
               end: float) -> tuple[Tensor, ...]:
        times = torch.tensor([start, end], dtype=state[0].dtype, device=state[0].device)
        options = {"step_size": abs(end - start) / self.solver_steps} if self.solver in FIXED_STEP_SOLVERS else {}
        kwargs = dict(rtol=self.rtol, atol=self.atol, method=self.solver, options=options)
        dynamics.solving = True
        try:
            if self.adjoint:
                # The adjoint solve differentiates only what it is told: the field's weights, and a
                # context that wants gradients (an amortising encoder's output, say).
                context = dynamics.context
                extra = (context,) if context is not None and context.requires_grad else ()
                path = odeint_adjoint(dynamics, state, times,
                                      adjoint_params=tuple(dynamics.velocity.parameters()) + extra, **kwargs)
            else:
                path = odeint(dynamics, state, times, **kwargs)
        finally:
            dynamics.solving = False
        return tuple(s[-1] for s in path)
