"""Heavy-tailed bases for variational flows: independent Student-t coordinates of integer ``df``,
and an equal-weight mixture of such Student-t components with learned locations and scales.

Importance weights w = p̃/q stay bounded only where q's tails are at least as heavy as p's; a flow
on a Gaussian base inherits Gaussian tails (and thin creases between modes), and a handful of draws
with huge weights then decide the ESS. A Student-t base gives q polynomial tails (Jaini et al. 2020,
"Tails of Lipschitz Triangular Flows", arXiv:1907.04481; Liang et al. 2022, "Fat-Tailed Variational
Inference with Anisotropic Tail Adaptive Flows", arXiv:2205.07918).

Drawn as ε / sqrt(χ²_ν / ν) with the χ² a sum of ν squared normals, so every draw comes from the
caller's generator (torch's own Student-t draws go through the gamma sampler, which takes none,
and is several times slower here).

A flow from a one-mode base onto a target of separated modes, or of rings, must stretch thin
bridges or seams between them, where q falls far below p and a few draws take huge weights
(Stimper et al. 2022, "Resampling Base Distributions of Normalizing Flows", arXiv:2110.15828). A
mixture base lets separate components feed separate parts of the target.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, StudentT

from flowforge.distributions.base import Base, event_shape_of


class StudentTBase(Base):
    """Independent standard Student-t coordinates with ``df`` (a whole number) degrees of freedom.

    >>> import torch
    >>> from flowforge.variational.base import StudentTBase
    >>> base = StudentTBase(2, df=5)
    >>> z = base.rsample(4, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(base.log_prob(z), base.distribution().log_prob(z))
    True
    """

    def __init__(self, shape: int | tuple[int, ...], df: int = 5):
        super().__init__()
        self.event_shape, self.df = event_shape_of(shape), whole_df(df)
        self.register_buffer("_zero", torch.zeros(()))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return student_t_log_density(z.reshape(z.shape[0], self.event_dim), self.df).sum(1)

    def rsample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        refuse_temperature(temperature)
        return student_t_noise((n, *self.event_shape), self.df, generator, self._zero)

    def distribution(self, context: Tensor | None = None) -> Distribution:
        zeros = self._zero.expand(self.event_shape)
        return Independent(StudentT(float(self.df), zeros, torch.ones_like(zeros)), len(self.event_shape))


class StudentTMixtureBase(Base):
    """An equal-weight mixture of K Student-t components of ``df`` degrees of freedom, each with a
    learned location μ_k and per-coordinate scale σ_k (a flat event of D numbers):

        p(z) = (1/K) Σ_k Π_i t_ν((z_i − μ_ki) / σ_ki) / σ_ki

    The weights stay equal because a draw's component is discrete: with fixed weights every draw's
    gradient is still a path derivative through μ and σ (the flow moves mass between components).
    The locations start as draws of N(0, ``spread``²) (torch's global generator, like any layer's
    initial weights), the scales at ``scale``. ``distribution()`` is torch's ``MixtureSameFamily``,
    which draws without gradients; the base's own ``rsample`` is reparameterised.

    >>> import torch
    >>> from flowforge.variational.base import StudentTMixtureBase
    >>> base = StudentTMixtureBase(2, components=4)
    >>> z = base.rsample(5, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(base.log_prob(z), base.distribution().log_prob(z))
    True
    """

    def __init__(self, shape: int | tuple[int], components: int = 8, df: int = 5, spread: float = 1.0,
                 scale: float = 0.6):
        super().__init__()
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValueError(f"a mixture base needs a whole number of components, at least 1, not {components!r}")
        if not (math.isfinite(spread) and spread >= 0 and math.isfinite(scale) and scale > 0):
            raise ValueError(f"a mixture base needs a finite spread ≥ 0 and scale > 0, not {spread!r} and {scale!r}")
        self.event_shape, self.df, self.components = event_shape_of(shape), whole_df(df), components
        if len(self.event_shape) != 1:
            raise ValueError(f"a mixture base is for flows of vectors, not of shape {tuple(self.event_shape)}")
        self.loc = nn.Parameter(spread * torch.randn(components, self.event_dim))
        self.log_scale = nn.Parameter(torch.full((components, self.event_dim), math.log(scale)))
        self.register_buffer("_zero", torch.zeros(()))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        u = (z.reshape(z.shape[0], 1, self.event_dim) - self.loc) * (-self.log_scale).exp()
        per_component = (student_t_log_density(u, self.df) - self.log_scale).sum(2)
        return torch.logsumexp(per_component, 1) - math.log(self.components)

    def rsample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        refuse_temperature(temperature)
        k = torch.randint(self.components, (n,), generator=generator, device=self._zero.device)
        noise = student_t_noise((n, self.event_dim), self.df, generator, self._zero)
        return (self.loc[k] + self.log_scale[k].exp() * noise).reshape(n, *self.event_shape)

    def distribution(self, context: Tensor | None = None) -> Distribution:
        weights = Categorical(logits=torch.zeros(self.components, device=self.loc.device, dtype=self.loc.dtype))
        components = Independent(StudentT(float(self.df), self.loc, self.log_scale.exp()), 1)
        return MixtureSameFamily(weights, components)


def whole_df(df) -> int:
    if int(df) != df or df < 1:
        raise ValueError(f"a Student-t base needs a whole number of degrees of freedom, got {df}")
    return int(df)


def refuse_temperature(temperature: float) -> None:
    if temperature != 1.0:
        raise ValueError("sampling at a temperature needs a Gaussian base (StandardNormal, DiagonalNormal)")


def student_t_log_density(u: Tensor, df: int) -> Tensor:
    """log t_ν(u) element-wise, for the standard Student-t of ν = ``df`` degrees of freedom."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return -(df + 1) / 2 * torch.log1p(u * u / df) + log_norm


def student_t_noise(shape: tuple, df: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard Student-t draws of ``shape`` as ε / sqrt(χ²_ν / ν), all from ``generator``, on
    ``like``'s device and dtype."""
    normals = torch.randn((df + 1, *shape), generator=generator, device=like.device, dtype=like.dtype)
    return normals[0] * torch.rsqrt((normals[1:] ** 2).sum(0) / df)
