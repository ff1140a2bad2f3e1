"""Base distributions p_z(z | c) of a flow, as modules (so their parameters train and move with ``.to``).

Every base offers, on a flat batch of N latents of shape (N, *event):

    log_prob(z, context=None) -> (N,)        rsample(n, context=None, temperature=1, generator=None) -> (n, *event)
    distribution(context=None) -> torch.distributions.Distribution

``context`` is None or (N, context_dim), one row per latent. Any ``torch.distributions`` object
with the right event shape can serve as a base through :class:`DistributionBase`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from flowforge.nets import mlp


def event_shape_of(shape: int | tuple[int, ...] | torch.Size) -> torch.Size:
    return torch.Size((shape,) if isinstance(shape, int) else tuple(shape))


class Base(nn.Module):
    """The interface of a flow's base distribution; ``context_dim`` > 0 marks a conditional one."""

    event_shape: torch.Size
    context_dim: int = 0

    @property
    def event_dim(self) -> int:
        """Numbers in one event: D for vectors, C·H·W for images."""
        return self.event_shape.numel()

    def distribution(self, context: Tensor | None = None) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.distribution(context).log_prob(z)

    def rsample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``rsample`` without a graph."""
        with torch.no_grad():
            return self.rsample(n, context, temperature, generator)


class GaussianBase(Base):
    """A normal base N(μ, diag σ²) whose μ and log σ come from ``_loc_log_scale(context, n)``.

        log p(z) = Σ_i [−½ ((z_i − μ_i)/σ_i)² − log σ_i − ½ log 2π]

    Sampling at temperature T draws μ + T·σ·ε, ε ~ N(0, I) (Glow's reduced-temperature samples).
    """

    def __init__(self, shape: int | tuple[int, ...]):
        super().__init__()
        self.event_shape = event_shape_of(shape)
        self.register_buffer("_zero", torch.zeros(()))  # device and dtype, even without parameters

    def _loc_log_scale(self, context: Tensor | None, n: int) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._loc_log_scale(context, z.shape[0])
        u = (z - loc) * (-log_scale).exp()
        terms = -0.5 * u * u - log_scale
        return terms.reshape(z.shape[0], self.event_dim).sum(1) - 0.5 * self.event_dim * math.log(2 * math.pi)

    def rsample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn((n, *self.event_shape), generator=generator, device=self._zero.device,
                          dtype=self._zero.dtype)
        loc, log_scale = self._loc_log_scale(context, n)
        return loc + temperature * log_scale.exp() * eps

    def distribution(self, context: Tensor | None = None) -> Distribution:
        """The same law as a ``torch.distributions`` object (batch shape (N,) for N context rows)."""
        loc, log_scale = self._loc_log_scale(context, 1 if context is None else context.shape[0])
        loc, log_scale = torch.broadcast_tensors(loc, log_scale)
        return Independent(Normal(loc, log_scale.exp()), len(self.event_shape))


class StandardNormal(GaussianBase):
    """N(0, I) over events of shape ``shape`` (an int for vectors, a tuple for images), the default base.

    >>> import torch
    >>> from flowforge import StandardNormal
    >>> base = StandardNormal(2)
    >>> base.log_prob(torch.zeros(1, 2))
    tensor([-1.8379])
    """

    def _loc_log_scale(self, context: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        zeros = self._zero.expand(self.event_shape)
        return zeros, zeros

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        z = z.reshape(z.shape[0], self.event_dim)
        return -0.5 * (z * z).sum(dim=1) - 0.5 * self.event_dim * math.log(2 * math.pi)

    def rsample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn((n, *self.event_shape), generator=generator, device=self._zero.device,
                        dtype=self._zero.dtype)
        return z * temperature


class DiagonalNormal(GaussianBase):
    """N(μ, diag σ²) with μ and log σ learned (``learned=False``: fixed at ``loc`` and ``scale``).

    >>> import torch
    >>> from flowforge.distributions import DiagonalNormal
    >>> base = DiagonalNormal(2)
    >>> base.log_prob(torch.zeros(1, 2)).detach()
    tensor([-1.8379])
    """

    def __init__(self, shape: int | tuple[int, ...], loc: float = 0.0, scale: float = 1.0, learned: bool = True):
        super().__init__(shape)
        if not scale > 0:
            raise ValueError(f"a normal base needs a positive scale, got {scale}")
        loc_init = torch.full(self.event_shape, float(loc))
        log_scale_init = torch.full(self.event_shape, math.log(scale))
        if learned:
            self.loc, self.log_scale = nn.Parameter(loc_init), nn.Parameter(log_scale_init)
        else:
            self.register_buffer("loc", loc_init)
            self.register_buffer("log_scale", log_scale_init)

    def _loc_log_scale(self, context: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        return self.loc, self.log_scale


class ConditionalDiagonalNormal(GaussianBase):
    """N(μ(c), diag σ(c)²): an MLP of the context gives μ and log σ (it starts at N(0, I)).

    >>> import torch
    >>> from flowforge.distributions import ConditionalDiagonalNormal
    >>> base = ConditionalDiagonalNormal(2, context_dim=3, hidden=16)
    >>> base.log_prob(torch.zeros(4, 2), context=torch.randn(4, 3)).shape
    torch.Size([4])
    """

    def __init__(self, shape: int | tuple[int, ...], context_dim: int, hidden: int = 64, depth: int = 2,
                 activation: str = "relu"):
        super().__init__(shape)
        if context_dim < 1:
            raise ValueError("a conditional base needs context_dim >= 1")
        self.context_dim = context_dim
        self.net = mlp(context_dim, 2 * self.event_dim, hidden, depth, activation)

    def _loc_log_scale(self, context: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        if context is None or context.shape != (n, self.context_dim):
            raise ValueError(f"this base is conditional: give a context of shape ({n}, {self.context_dim})")
        loc, log_scale = self.net(context.to(self._zero.dtype)).chunk(2, dim=1)
        return loc.reshape(n, *self.event_shape), log_scale.reshape(n, *self.event_shape)


class DistributionBase(Base):
    """Any ``torch.distributions`` object as a base, e.g. a Student-t for heavy tails.

    Batch dimensions that complete the event shape are reinterpreted as event dimensions, so
    ``StudentT(df, loc=torch.zeros(2), ...)`` serves as a 2-D base. The distribution's tensor
    arguments become buffers, or the base's own parameters where they require gradients (so they
    train and are saved with the flow), and the distribution is rebuilt from them, so ``.to(device or dtype)`` moves it with
    the flow; a distribution that cannot be rebuilt from its arguments is kept as given. Sampling
    uses ``rsample`` where the distribution has one; with a ``generator`` the draw is made from a
    seed taken from it, repeatable without touching the global RNG. Temperatures other than 1 are
    refused (they are defined for Gaussian bases only).

    >>> import torch
    >>> from flowforge.distributions import DistributionBase
    >>> base = DistributionBase(torch.distributions.StudentT(3.0, torch.zeros(2), torch.ones(2)))
    >>> base.event_shape, base.log_prob(torch.zeros(5, 2)).shape
    (torch.Size([2]), torch.Size([5]))
    >>> base.double().sample(3).dtype
    torch.float64
    """

    def __init__(self, distribution: Distribution, event_shape: int | tuple[int, ...] | None = None):
        super().__init__()
        full = distribution.batch_shape + distribution.event_shape
        wanted = event_shape_of(event_shape) if event_shape is not None else full
        if full != wanted:
            raise ValueError(f"the base distribution has shape {tuple(full)}, not the event shape {tuple(wanted)}")
        self.event_shape = wanted
        self.register_buffer("_zero", torch.zeros(()))
        inner = distribution
        while isinstance(inner, Independent):
            inner = inner.base_dist
        self._family, self._reinterpreted = type(inner), len(wanted) - len(inner.event_shape)
        self._arguments = [name for name in inner.arg_constraints
                           if torch.is_tensor(vars(inner).get(name)) and not hasattr(self, name)]
        for name in self._arguments:
            value = vars(inner)[name]
            if value.requires_grad:  # a learnable argument becomes the base's own parameter
                self.register_parameter(name, nn.Parameter(value.detach().clone()))
            else:
                self.register_buffer(name, value.detach().clone())
        self._fixed = None
        try:
            self.distribution()
        except (TypeError, ValueError):  # not rebuildable from its arguments: keep the object itself
            self._fixed = distribution

    def distribution(self, context: Tensor | None = None) -> Distribution:
        if self._fixed is not None:
            return self._fixed
        inner = self._family(**{name: getattr(self, name) for name in self._arguments}, validate_args=False)
        return Independent(inner, self._reinterpreted) if self._reinterpreted else inner

    def rsample(self, n: int, context: Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        if temperature != 1.0:
            raise ValueError("sampling at a temperature needs a Gaussian base (StandardNormal, DiagonalNormal)")
        law = self.distribution()
        draw = law.rsample if law.has_rsample else law.sample
        if generator is None:
            return draw((n,))
        seed = int(torch.randint(2 ** 62, (), generator=generator, device=generator.device))
        device = self._zero.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.default_generator.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)
            return draw((n,))


def as_base(base: Base | Distribution | int | tuple[int, ...]) -> Base:
    """A :class:`Base` from a base, a ``torch.distributions`` object, or an event shape (→ N(0, I))."""
    if isinstance(base, Base):
        return base
    if isinstance(base, Distribution):
        return DistributionBase(base)
    if isinstance(base, (int, tuple, list, torch.Size)):
        return StandardNormal(tuple(base) if not isinstance(base, int) else base)
    raise TypeError(f"a flow's base must be a flowforge base, a torch Distribution or an event shape, "
                    f"not {type(base).__name__}")
