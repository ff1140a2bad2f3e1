"""A normalizing flow: a base distribution pushed through an invertible transform.

    log p(x) = log p_z(f(x)) + log|det J_f(x)|,    x = g(z) = f⁻¹(z),  z ~ p_z
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.distributions.normal import StandardNormal
from flowforge.transforms.base import Transform


class Flow(nn.Module):
    """A density over data with the ``torch.distributions`` verbs.

    ``forward`` (data → latent, the chapter's direction 1) and ``inverse`` (latent → data,
    direction -1) both return ``(output, log_abs_det)`` of the map they apply.

    >>> from flowforge.models import RealNVP
    >>> flow = RealNVP(2, num_layers=2, hidden=8, depth=1)
    >>> x = flow.sample(5); flow.log_prob(x).shape
    torch.Size([5])
    """

    def __init__(self, transform: Transform, base: StandardNormal):
        super().__init__()
        self.transform = transform
        self.base = base

    def _check(self, x: Tensor, what: str) -> Tensor:
        if x.dim() < 1 or x.shape[1:] != self.base.event_shape:
            raise ValueError(f"expected {what} of shape (batch, {', '.join(map(str, self.base.event_shape))}), "
                             f"got {tuple(x.shape)}")
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(self._check(x, "data"))

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(self._check(z, "latents"))

    def log_prob(self, x: Tensor) -> Tensor:
        z, log_abs_det = self.forward(x)
        return self.base.log_prob(z) + log_abs_det

    def sample(self, n: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        if n < 0:
            raise ValueError(f"cannot draw a negative number of samples ({n})")
        with torch.no_grad():
            x, _ = self.transform.inverse(self.base.sample(n, temperature, generator))
        return x

    def sample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        # log p(x) = log p_z(z) - log|det J_g(z)|: no second pass through f is needed.
        z = self.base.sample(n, generator=generator)
        x, log_abs_det_inverse = self.transform.inverse(z)
        return x, self.base.log_prob(z) - log_abs_det_inverse
