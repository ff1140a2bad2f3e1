"""Time-conditioned velocity fields f(z, t) for continuous flows, built from concat-squash layers.

A concat-squash layer (FFJORD, Grathwohl et al. 2019) lets time gate and shift every unit:

    h' = (W h + b) · σ(g(t)) + c(t),    g, c affine in t
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.checks import whole_number
from flowforge.nets import ACTIVATIONS

# Smooth activations suit ODE dynamics (the trace needs ∂f/∂z everywhere); relu etc. stay available.
VELOCITY_ACTIVATIONS = {**ACTIVATIONS, "softplus": nn.Softplus}


def _time_column(t: Tensor, like: Tensor) -> Tensor:
    """t as a column that broadcasts over a batch: a scalar becomes (1, 1), per-sample (B,) becomes (B, 1)."""
    return t.to(like.dtype).reshape(-1, 1)


class ConcatSquashLinear(nn.Module):
    """One time-conditioned layer: (W h + b) · σ(gate(t)) + bias(t).

    >>> import torch
    >>> from flowforge.transforms.dynamics import ConcatSquashLinear
    >>> layer = ConcatSquashLinear(2, 8)
    >>> layer(torch.tensor(0.5), torch.randn(4, 2)).shape
    torch.Size([4, 8])
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(1, out_features)
        self.bias = nn.Linear(1, out_features, bias=False)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        time = _time_column(t, h)
        return self.linear(h) * torch.sigmoid(self.gate(time)) + self.bias(time)

    def zero_(self) -> "ConcatSquashLinear":
        """Make the layer output 0 for every input and time (a flow built on it starts as the identity)."""
        for p in (self.linear.weight, self.linear.bias, self.bias.weight):
            nn.init.zeros_(p)
        return self


class ConcatSquashMLP(nn.Module):
    """The velocity f(z, t[, c]): ``depth`` concat-squash hidden layers of width ``hidden``, dim → dim.

    With ``context_dim`` > 0 the first layer also takes a (batch, context_dim) context beside z,
    so the field, and the flow it integrates to, is conditional: p(x | c). The divergence is
    taken with respect to z only.

    ``t`` is a scalar (one time for the whole batch, as an ODE solver calls it) or one time per
    sample (as flow matching calls it). The last layer starts at zero, so f ≡ 0 and the flow
    starts as the identity map.

    >>> import torch
    >>> from flowforge.transforms.dynamics import ConcatSquashMLP
    >>> f = ConcatSquashMLP(2, hidden=16, depth=2)
    >>> f(torch.tensor(0.3), torch.randn(5, 2)).shape, f(torch.rand(5), torch.randn(5, 2)).shape
    (torch.Size([5, 2]), torch.Size([5, 2]))
    >>> ConcatSquashMLP(2, hidden=16, depth=2, context_dim=3)(torch.tensor(0.3), torch.randn(5, 2), torch.randn(5, 3)).shape
    torch.Size([5, 2])
    """

    def __init__(self, dim: int, hidden: int = 64, depth: int = 3, activation: str = "tanh", context_dim: int = 0):
        super().__init__()
        if activation not in VELOCITY_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(VELOCITY_ACTIVATIONS)}")
        hidden, depth = whole_number(hidden, "hidden"), whole_number(depth, "depth")
        self.context_dim = context_dim = whole_number(context_dim, "context_dim", low=0)
        widths = [dim + context_dim] + [hidden] * depth
        self.hidden_layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in zip(widths, widths[1:]))
        self.activation = VELOCITY_ACTIVATIONS[activation]()
        self.output = ConcatSquashLinear(hidden, dim).zero_()

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        h = z if context is None else torch.cat([z, context.to(z.dtype)], dim=1)
        for layer in self.hidden_layers:
            h = self.activation(layer(t, h))
        return self.output(t, h)
