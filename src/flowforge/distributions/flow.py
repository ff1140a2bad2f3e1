"""A normalizing flow: a base distribution pushed through an invertible transform.

    log p(x | c) = log p_z(f(x; c) | c) + log|det J_f(x; c)|,    x = g(z; c) = f⁻¹(z; c),  z ~ p_z(· | c)

Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", arXiv:1505.05770;
Papamakarios et al. 2021, "Normalizing Flows for Probabilistic Modeling and Inference",
arXiv:1912.02762.
"""

from __future__ import annotations

import math
import warnings
from itertools import chain

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from flowforge.checks import positive_finite
from flowforge.distributions.base import Base, as_base
from flowforge.transforms.base import Transform


def _count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, Tensor)) or (torch.is_tensor(n) and (
            n.dim() != 0 or n.is_floating_point())):
        raise ValueError(f"a sample shape holds whole numbers, got {n!r}")
    if int(n) < 0:
        raise ValueError(f"cannot draw a negative number of samples ({int(n)})")
    return int(n)


def sample_shape_of(sample_shape) -> torch.Size:
    """An int n or a shape (tuple, list, torch.Size) of whole numbers ≥ 0, as a torch.Size."""
    if isinstance(sample_shape, (int, Tensor)):
        return torch.Size([_count(sample_shape)])
    if not isinstance(sample_shape, (tuple, list, torch.Size)):
        raise ValueError(f"a sample shape is an int or a tuple of ints, got {sample_shape!r}")
    return torch.Size([_count(n) for n in sample_shape])


class LogProbOverflowWarning(RuntimeWarning):
    """``count`` NaN-free points whose log-density came out NaN (float overflow far from the data,
    or non-finite weights) were reported as −inf."""

    def __init__(self, count: int):
        super().__init__(f"the log-density of {count} NaN-free points is NaN (float overflow far from the data, "
                         "or non-finite weights); reported as -inf")
        self.count = count


class Flow(nn.Module):
    """A density over data with the ``torch.distributions`` verbs, optionally conditional.

    ``forward`` (data → latent, the book's direction −1, as in training) and ``inverse``
    (latent → data, direction 1, as in sampling) return ``(output, log_abs_det)`` of the map they
    apply. Every verb takes any number of batch dimensions in front of the event shape; with a
    context of batch shape B, ``sample((n,), context=c)`` returns (n, *B, *event) and
    ``log_prob(x, context=c)`` broadcasts x's batch dimensions against B, as
    ``torch.distributions`` does.

    Args:
        transform: the invertible map f from data to latent.
        base: a flowforge base (``StandardNormal``, ``DiagonalNormal``, a conditional base), any
            ``torch.distributions.Distribution`` of the event shape, or the event shape itself (N(0, I)).
        context_embedding: a module applied to the context before any layer sees it, keeping its
            size (nflows' ``embedding_net``; the trainer standardises a table's context columns so).

    >>> import torch
    >>> from flowforge.models import RealNVP
    >>> flow = RealNVP(2, num_layers=2, hidden=8, depth=1)
    >>> x = flow.sample(5); flow.log_prob(x).shape
    torch.Size([5])
    >>> conditional = RealNVP(2, num_layers=2, hidden=8, depth=1, context_dim=3)
    >>> conditional.sample((4,), context=torch.randn(6, 3)).shape
    torch.Size([4, 6, 2])
    """

    def __init__(self, transform: Transform, base: Base | Distribution | int | tuple[int, ...],
                 context_embedding: nn.Module | None = None):
        super().__init__()
        self.transform = transform
        self.base = as_base(base)
        self.context_embedding = context_embedding
        sizes = {int(getattr(m, "context_dim", 0)) for m in self.modules()} - {0}  # int: a 0-d tensor hashes by identity
        if len(sizes) > 1:
            raise ValueError(f"the flow's layers expect contexts of different sizes {sorted(sizes)}")
        self.context_dim = sizes.pop() if sizes else 0
        self._register_load_state_dict_pre_hook(self._adopt_context_standardization)

    def _adopt_context_standardization(self, state: dict, prefix: str, *_) -> None:
        """Weights saved after :func:`~flowforge.transforms.fit_standardization` gave the flow a
        context standardisation load into a flow built afresh (which has none yet) too."""
        if self.context_embedding is None and f"{prefix}context_embedding.mean" in state:
            from flowforge.transforms.standardize import StandardizeContext

            self.context_embedding = StandardizeContext(len(state[f"{prefix}context_embedding.mean"]))

    @property
    def event_shape(self) -> torch.Size:
        """The shape of one sample: (D,) for vectors, (C, H, W) for images."""
        return self.base.event_shape

    def _dtype(self) -> torch.dtype | None:
        anchor = getattr(self.base, "_zero", None)  # flowforge's bases keep one: no walk over the modules
        if anchor is not None:
            return anchor.dtype
        tensors = chain(self.parameters(), self.buffers())
        return next((t.dtype for t in tensors if t.is_floating_point()), None)

    def check_event(self, x: Tensor, what: str = "data") -> torch.Size:
        """Refuse, in plain words, a tensor that is not (*batch, *event) in the flow's dtype; return its batch shape."""
        event, k = self.event_shape, len(self.event_shape)
        if not torch.is_tensor(x) or x.dim() < k or x.shape[x.dim() - k:] != event:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected {what} of shape (batch, {', '.join(map(str, event))}), got {shape}")
        dtype = self._dtype()
        if dtype is not None and x.dtype != dtype:
            raise ValueError(f"the flow computes in {dtype} but the {what} are {x.dtype}; "
                             f"convert one of them (flow.to({dtype}) or x.to({dtype}))")
        return x.shape[:x.dim() - k]

    def embed_context(self, context: Tensor | None) -> Tensor | None:
        """The context as the layers see it: through ``context_embedding`` when the flow has one."""
        return context if context is None or self.context_embedding is None else self.context_embedding(context)

    def _flatten(self, x: Tensor, context: Tensor | None, what: str) -> tuple[Tensor, Tensor | None, torch.Size]:
        """(x as (N, *event), the embedded context as (N, C) or None, the batch shape N came from)."""
        event, batch = self.event_shape, self.check_event(x, what)
        if self._check_context(context) is None:
            return x.reshape(batch.numel(), *event), None, batch
        context = self.embed_context(context)
        try:
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
        except RuntimeError:
            raise ValueError(f"the batch shape {tuple(batch)} of the {what} does not broadcast against the context's "
                             f"{tuple(context.shape[:-1])}") from None
        x = x.expand(*batch, *event).reshape(batch.numel(), *event)
        return x, self._rows(context, batch), batch

    def _check_context(self, context) -> Tensor | None:
        """The context, after checking it is given exactly when the flow is conditional, with the right size."""
        if context is None:
            if self.context_dim:
                raise ValueError(f"this flow is conditional (context_dim={self.context_dim}): give a context")
            return None
        if not torch.is_tensor(context):
            raise ValueError(f"a context must be a tensor of shape (..., context_dim), not {type(context).__name__}"
                             " (pass temperature and generator by keyword)")
        if not self.context_dim:
            raise ValueError("this flow is unconditional (context_dim=0): it takes no context")
        if context.dim() < 1:
            one = f": give torch.tensor([{context.item():g}]) for one condition" if self.context_dim == 1 else ""
            raise ValueError(f"a context must be a tensor of shape (..., {self.context_dim}), not a 0-d tensor{one}")
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"this flow expects a context of {self.context_dim} values, got {context.shape[-1]}"
                             f"{self._context_hint(context)}")
        if context.is_floating_point() and not bool(torch.isfinite(context).all()):  # NaN draws, -inf densities
            raise ValueError("the context holds NaN or an infinite value; a flow is conditioned on finite values")
        return context

    def _context_hint(self, context: Tensor) -> str:
        """What a context of the wrong width likely meant: class labels (one-hot them), or N
        conditions of one value each given as (N,)."""
        if self.context_dim == 1 and context.dim() == 1:
            rows = context.shape[-1]
            return f"; {rows} conditions of one value each are context.unsqueeze(-1), of shape ({rows}, 1)"
        if not context.is_floating_point() and self.context_dim > 1:
            return f"; a class label is given one-hot: torch.nn.functional.one_hot(labels, {self.context_dim}).float()"
        return ""

    @staticmethod
    def _rows(context: Tensor, batch: torch.Size) -> Tensor:
        """The context broadcast to ``batch`` and flattened to one row per batch entry: (N, C)."""
        return context.expand(*batch, context.shape[-1]).reshape(batch.numel(), context.shape[-1])

    def _latents(self, sample_shape, context: Tensor | None, temperature: float,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor | None, torch.Size]:
        """Base draws for ``sample_shape`` samples of each context row: (z as (N, *event), the context
        per draw, the batch shape N came from)."""
        shape = sample_shape_of(sample_shape)
        if self._check_context(context) is None:
            batch, rows = shape, None
        else:
            batch = shape + context.shape[:-1]
            rows = self._rows(self.embed_context(context), batch)
        z = self.base.rsample(batch.numel(), rows, positive_finite(temperature, "the temperature"), generator)
        return z, rows, batch

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data → latent (the book's direction −1, as in training): (z = f(x; c), log|det J_f(x; c)|)."""
        x, context, batch = self._flatten(x, context, "data")
        z, log_abs_det = self.transform(x, context)
        return z.reshape(*batch, *z.shape[1:]), log_abs_det.reshape(batch)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent → data (the book's direction 1, as in sampling): (x = g(z; c), log|det J_g(z; c)|)."""
        z, context, batch = self._flatten(z, context, "latents")
        x, log_abs_det = self.transform.inverse(z, context)
        return x.reshape(*batch, *x.shape[1:]), log_abs_det.reshape(batch)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """log p(x | c) in data units, one value per batch entry; finite or −inf for finite x, never NaN."""
        x, context, batch = self._flatten(x, context, "data")
        if x.shape[0] == 0:
            return x.new_empty(batch)
        z, log_abs_det = self.transform(x, context)
        return self._no_nan(self.base.log_prob(z, context) + log_abs_det, x).reshape(batch)

    @staticmethod
    def _no_nan(log_p: Tensor, x: Tensor) -> Tensor:
        """−inf where float overflow far from the data turned a NaN-free input's log-density into NaN.

        Without gradients (evaluation) one check finds the common case, nothing to fix; with
        them the fix is applied unconditionally, so a training step never waits on the device."""
        nan = torch.isnan(log_p)
        evaluating = not torch.is_grad_enabled()
        if evaluating and not bool(nan.any()):
            return log_p
        overflowed = nan & ~torch.isnan(x).flatten(1).any(1)
        if evaluating and bool(overflowed.any()):
            warnings.warn(LogProbOverflowWarning(int(overflowed.sum())), stacklevel=3)
        return torch.where(overflowed, -math.inf, log_p)

    def rsample_and_log_prob(self, sample_shape: int | tuple[int, ...] = (), context: Tensor | None = None,
                             temperature: float = 1.0, generator: torch.Generator | None = None
                             ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples x = g(z; c) and their log p(x | c) from one pass:
        log p(x) = log p_z(z) − log|det J_g(z)|, so no second pass through f is needed."""
        z, context, batch = self._latents(sample_shape, context, temperature, generator)
        if z.shape[0] == 0:
            return z.reshape(*batch, *self.event_shape), z.new_empty(batch)
        x, log_abs_det = self.transform.inverse(z, context)
        log_p = self.base.log_prob(z, context) - log_abs_det
        return x.reshape(*batch, *self.event_shape), log_p.reshape(batch)

    def training_loss(self, batch: Tensor, objective: str = "mle", context: Tensor | None = None) -> Tensor:
        """The loss the trainer minimises: −mean log p(x | c). Families with other objectives
        (a continuous flow's flow matching) override it."""
        if objective != "mle":
            from flowforge.errors import FlowforgeError

            raise FlowforgeError(f"this model trains only by maximum likelihood, not {objective!r}")
        return -self.log_prob(batch, context).mean()

    def training_metrics(self) -> dict[str, int]:
        """Counters the trainer logs at each evaluation (a continuous flow's function evaluations)."""
        return {}

    def rsample(self, sample_shape: int | tuple[int, ...] = (), context: Tensor | None = None,
                temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Samples x = g(z; c), z ~ p_z at ``temperature`` (Gaussian bases: z scaled by T), whose
        graph reaches the flow's parameters (reparameterised: for reverse-KL training)."""
        z, context, batch = self._latents(sample_shape, context, temperature, generator)
        if z.shape[0] == 0:
            return z.reshape(*batch, *self.event_shape)
        return self.transform.inverse(z, context)[0].reshape(*batch, *self.event_shape)

    def sample(self, sample_shape: int | tuple[int, ...] = (), context: Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """:meth:`rsample` without a graph; an int n gives (n, *event)."""
        with torch.no_grad():
            return self.rsample(sample_shape, context, temperature, generator)

    def sample_and_log_prob(self, sample_shape: int | tuple[int, ...] = (), context: Tensor | None = None,
                            temperature: float = 1.0, generator: torch.Generator | None = None
                            ) -> tuple[Tensor, Tensor]:
        """:meth:`rsample_and_log_prob` without a graph."""
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape, context, temperature, generator)

    def distribution(self, context: Tensor | None = None) -> "FlowDistribution":
        """This flow (given ``context``) as a ``torch.distributions.Distribution``.

        >>> import torch
        >>> from flowforge.models import RealNVP
        >>> d = RealNVP(2, num_layers=2, hidden=8, depth=1).distribution()
        >>> isinstance(d, torch.distributions.Distribution), d.rsample((3,)).shape
        (True, torch.Size([3, 2]))
        """
        return FlowDistribution(self, context)


class FlowDistribution(Distribution):
    """A :class:`Flow` at a fixed context as a ``torch.distributions.Distribution``: batch shape
    is the context's (or ``batch_shape``, or ()), event shape the flow's; ``rsample`` is
    reparameterised. Calling it draws a sample and ``expand`` broadcasts it to a batch shape, as
    Pyro's ``pyro.sample`` and ``pyro.plate`` expect.

    >>> import torch
    >>> from flowforge.models import RealNVP
    >>> flow = RealNVP(2, num_layers=2, hidden=8, depth=1, context_dim=3)
    >>> d = flow.distribution(torch.randn(4, 3))
    >>> d.batch_shape, d.event_shape, d.sample((5,)).shape, d.expand((6, 4)).sample().shape
    (torch.Size([4]), torch.Size([2]), torch.Size([5, 4, 2]), torch.Size([6, 4, 2]))
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, flow: Flow, context: Tensor | None = None, batch_shape: torch.Size | None = None):
        self.flow, self.context = flow, flow._check_context(context)  # refused now, not at the first draw
        if batch_shape is None:
            batch_shape = torch.Size() if context is None else context.shape[:-1]
        super().__init__(torch.Size(batch_shape), flow.event_shape, validate_args=None)

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def expand(self, batch_shape, _instance=None) -> "FlowDistribution":
        batch_shape = torch.Size(batch_shape)
        try:
            fits = torch.broadcast_shapes(self.batch_shape, batch_shape) == batch_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"cannot expand a batch of shape {tuple(self.batch_shape)} to {tuple(batch_shape)}")
        context = None if self.context is None else self.context.expand(*batch_shape, self.context.shape[-1])
        return FlowDistribution(self.flow, context, batch_shape)

    def _draw_shape(self, sample_shape) -> torch.Size:
        # With a context its rows are the batch; without one the batch is drawn like samples.
        shape = sample_shape_of(sample_shape)
        return shape if self.context is not None else shape + self.batch_shape

    def log_prob(self, value: Tensor) -> Tensor:
        log_p = self.flow.log_prob(value, context=self.context)
        if self.context is not None or not self.batch_shape:
            return log_p
        try:  # an expanded unconditional flow: one value per batch entry, as torch.distributions gives
            return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))
        except RuntimeError:
            raise ValueError(f"values of batch shape {tuple(log_p.shape)} do not broadcast against the "
                             f"distribution's batch shape {tuple(self.batch_shape)}") from None

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        return self.flow.rsample(self._draw_shape(sample_shape), context=self.context)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        return self.flow.sample(self._draw_shape(sample_shape), context=self.context)

    def __call__(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        return self.rsample(sample_shape)
