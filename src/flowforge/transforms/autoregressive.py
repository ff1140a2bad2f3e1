"""Masked autoregressive transforms: each feature's element-wise map takes its parameters from the
features before it (and the context), so the Jacobian is triangular in that order.

    y_i = h(x_i; θ_i(x_{<i}, c)),    log|det J| = Σ_i log|∂h/∂x_i|

The data → latent direction (``forward``, the density) is one pass of a MADE; the inverse
(sampling) takes D passes. ``Inverse(MaskedAutoregressive(...))`` is the inverse autoregressive
flow, which samples in one pass (for variational inference).

Papamakarios et al. 2017, "Masked Autoregressive Flow for Density Estimation", arXiv:1705.07057;
Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive Flow",
arXiv:1606.04934; Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032.
"""

from __future__ import annotations

from torch import Tensor

from flowforge.nets import MADE
from flowforge.transforms.base import Transform, check_context
from flowforge.transforms.elementwise import ElementwiseMap


class MaskedAutoregressive(Transform):
    """An element-wise map (affine, spline, …) on vectors whose parameters a MADE predicts.

    Args:
        features: D.
        elementwise: the map (e.g. ``Affine()``, ``RationalQuadraticSpline(8, 3.0)``).
        hidden, depth, activation: the MADE's size.
        context_dim: the size of a context every hidden unit sees (0: unconditional).
        order: the autoregressive order, a permutation of 0…D−1 (default 0, 1, …).

    >>> import torch
    >>> from flowforge.transforms import Affine, MaskedAutoregressive
    >>> maf = MaskedAutoregressive(3, Affine(), hidden=16, context_dim=2)
    >>> z, log_abs_det = maf(torch.randn(4, 3), torch.randn(4, 2))
    >>> x, _ = maf.inverse(z, torch.zeros(4, 2))
    """

    def __init__(self, features: int, elementwise: ElementwiseMap, hidden: int = 64, depth: int = 2,
                 context_dim: int = 0, order: Tensor | list[int] | None = None, activation: str = "relu"):
        super().__init__()
        self.features, self.context_dim, self.elementwise = features, context_dim, elementwise
        self.made = MADE(features, elementwise.params_per_element, hidden, depth, context_dim, order, activation)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = check_context(context, self.context_dim, x.shape[0], "MaskedAutoregressive")
        y, log_der = self.elementwise(x, self.made(x, context))
        return y, log_der.sum(dim=1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # Pass k fixes the feature of degree k: it depends only on those already fixed.
        context = check_context(context, self.context_dim, y.shape[0], "MaskedAutoregressive")
        x = y.new_zeros(y.shape)
        for _ in range(self.features):
            x, log_der = self.elementwise.inverse(y, self.made(x, context))
        return x, log_der.sum(dim=1)
