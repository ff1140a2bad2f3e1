"""The standard Gaussian base distribution: log N(z; 0, I) = -½‖z‖² - (D/2) log 2π."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class StandardNormal(nn.Module):
    """N(0, I) over events of shape ``shape`` (an int for vectors, a tuple for images).

    >>> base = StandardNormal(2)
    >>> base.log_prob(torch.zeros(1, 2))
    tensor([-1.8379])
    """

    def __init__(self, shape: int | tuple[int, ...]):
        super().__init__()
        self.event_shape = torch.Size((shape,) if isinstance(shape, int) else shape)
        # A buffer so .to(device/dtype) moves the base along with the transforms.
        self.register_buffer("_zero", torch.zeros(()))

    @property
    def event_dim(self) -> int:
        return self.event_shape.numel()

    def log_prob(self, z: Tensor) -> Tensor:
        z = z.reshape(z.shape[0], -1)
        return -0.5 * (z * z).sum(dim=1) - 0.5 * self.event_dim * math.log(2 * math.pi)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn((n, *self.event_shape), generator=generator,
                        device=self._zero.device, dtype=self._zero.dtype)
        return z * temperature

    def distribution(self) -> torch.distributions.Distribution:
        """The same law as a ``torch.distributions`` object."""
        loc = self._zero.expand(self.event_shape)
        return torch.distributions.Independent(
            torch.distributions.Normal(loc, torch.ones_like(loc)), len(self.event_shape))
