"""Conditional flow matching (Lipman et al., 2023) with straight paths: a simulation-free CNF objective.

With z ~ N(0, I), x from the data and s ~ U(0, 1), the point x_t = (1 - s) z + s x at time
t = s·T moves at the constant velocity (x - z)/T, and the field is regressed onto it:

    L = E ‖f(x_t, t) - (x - z)/T‖²

Its minimiser is the marginal velocity that carries N(0, I) at t = 0 to the data at t = T, the
direction in which :class:`flowforge.transforms.cnf.CNF` generates; no ODE is solved.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.transforms.cnf import CNF


def flow_matching_loss(cnf: CNF, x: Tensor) -> Tensor:
    """Mean over the batch of ‖f(x_t, t) - (x - z)/T‖² (fresh z and t from torch's global RNG).

    >>> from flowforge.transforms.dynamics import ConcatSquashMLP
    >>> flow_matching_loss(CNF(ConcatSquashMLP(2, 16, 2)), torch.randn(64, 2)).shape
    torch.Size([])
    """
    z = torch.randn_like(x)
    s = torch.rand(x.shape[0], 1, dtype=x.dtype, device=x.device)
    x_t = (1 - s) * z + s * x
    target = (x - z) / cnf.total_time
    residual = cnf.velocity(s.squeeze(1) * cnf.total_time, x_t) - target
    return (residual * residual).sum(dim=1).mean()
