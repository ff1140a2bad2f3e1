"""The divergence Tr(∂f/∂z) of a velocity field, exactly or by Hutchinson's estimator.

    exact:        Tr J = Σ_i ∂f_i/∂z_i                    (D vector-Jacobian products)
    Hutchinson:   Tr J ≈ εᵀ J ε,  E[εεᵀ] = I               (one vector-Jacobian product)

Both also return ‖J‖²_F (exact from the same rows, or ≈ ‖εᵀJ‖²), the Jacobian penalty of
"How to train your neural ODE" (Finlay et al., 2020), at no extra cost. The field must act on
each sample separately (no batch coupling), so the gradient of Σ_batch f_i gives row i per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISES = ("gaussian", "rademacher")


def sample_noise(like: Tensor, kind: str = "gaussian") -> Tensor:
    """ε with E[εεᵀ] = I: standard normal, or ±1 with equal odds (Rademacher, lower variance)."""
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, 2) * 2 - 1
    raise ValueError(f"unknown noise {kind!r}; choose from {', '.join(NOISES)}")


def exact_divergence(f: Tensor, z: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """(Tr ∂f/∂z, ‖∂f/∂z‖²_F) per sample, from the D rows of the Jacobian; ``f`` must depend on ``z``.

    >>> import torch
    >>> from flowforge.transforms.divergence import exact_divergence
    >>> z = torch.randn(4, 2, requires_grad=True)
    >>> exact_divergence(3 * z, z)[0]
    tensor([6., 6., 6., 6.])
    """
    trace = f.new_zeros(f.shape[0])
    frobenius = f.new_zeros(f.shape[0])
    for i in range(f.shape[1]):
        row = torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[0]
        trace = trace + row[:, i]
        frobenius = frobenius + (row * row).sum(dim=1)
    return trace, frobenius


def hutchinson_divergence(f: Tensor, z: Tensor, noise: Tensor,
                          create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """Unbiased (εᵀ J ε, ‖εᵀ J‖²) per sample for the given noise ε (same shape as z).

    >>> import torch
    >>> from flowforge.transforms.divergence import hutchinson_divergence
    >>> z = torch.randn(4, 2, requires_grad=True)
    >>> hutchinson_divergence(3 * z, z, torch.ones(4, 2))[0]
    tensor([6., 6., 6., 6.])
    """
    eps_jacobian = torch.autograd.grad(f, z, noise, create_graph=create_graph, retain_graph=True)[0]
    return (eps_jacobian * noise).sum(dim=1), (eps_jacobian * eps_jacobian).sum(dim=1)


def divergence(f: Tensor, z: Tensor, noise: Tensor | None = None,
               create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """Exact when ``noise`` is None, else Hutchinson with that ε: (trace, squared Frobenius norm)."""
    if noise is None:
        return exact_divergence(f, z, create_graph)
    return hutchinson_divergence(f, z, noise, create_graph)
