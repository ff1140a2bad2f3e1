"""A heavy-tailed base for variational flows: independent Student-t coordinates of integer ``df``.

Importance weights w = p̃/q stay bounded only where q's tails are at least as heavy as p's; a flow
on a Gaussian base inherits Gaussian tails (and thin creases between modes), and a handful of draws
with huge weights then decide the ESS. A Student-t base gives q polynomial tails (Jaini et al. 2020,
"Tails of Lipschitz Triangular Flows", arXiv:1907.04481; Liang et al. 2022, "Fat-Tailed Variational
Inference with Anisotropic Tail Adaptive Flows", arXiv:2205.07918).

Drawn as ε / sqrt(χ²_ν / ν) with the χ² a sum of ν squared normals, so every draw comes from the
caller's generator (torch's own Student-t draws go through the gamma sampler, which takes none,
and is several times slower here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, StudentT

from flowforge.distributions.base import Base, event_shape_of


class StudentTBase(Base):
    """Independent standard Student-t coordinates with ``df`` (a whole number) degrees of freedom.

    >>> base = StudentTBase(2, df=5)
    >>> z = base.rsample(4, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(base.log_prob(z), base.distribution().log_prob(z))
    True
    """

    def __init__(self, shape: int | tuple[int, ...], df: int = 5):
        super().__init__()
        if int(df) != df or df < 1:
            raise ValueError(f"a Student-t base needs a whole number of degrees of freedom, got {df}")
        self.event_shape, self.df = event_shape_of(shape), int(df)
        self.register_buffer("_zero", torch.zeros(()))
        nu = self.df
        self._log_norm = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        z = z.reshape(z.shape[0], self.event_dim)
        terms = -(self.df + 1) / 2 * torch.log1p(z * z / self.df)
        return terms.sum(1) + self.event_dim * self._log_norm

    def rsample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        if temperature != 1.0:
            raise ValueError("sampling at a temperature needs a Gaussian base (StandardNormal, DiagonalNormal)")
        normals = torch.randn((self.df + 1, n, *self.event_shape), generator=generator, device=self._zero.device,
                              dtype=self._zero.dtype)
        chi2 = (normals[1:] ** 2).sum(0)
        return normals[0] * torch.rsqrt(chi2 / self.df)

    def distribution(self, context: Tensor | None = None) -> Distribution:
        zeros = self._zero.expand(self.event_shape)
        return Independent(StudentT(float(self.df), zeros, torch.ones_like(zeros)), len(self.event_shape))
