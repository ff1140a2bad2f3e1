"""The invertible-transform interface and composition.

A transform maps x to y = f(x; c), optionally given a context c, and reports log|det ∂f/∂x| per
sample:

    log p(x | c) = log p_y(f(x; c) | c) + log|det J_f(x; c)|
"""

from __future__ import annotations

from typing import Iterable

from torch import Tensor, nn


class Transform(nn.Module):
    """An invertible map with a tractable log-determinant, optionally conditioned on a context.

    Subclasses implement ``forward(x, context=None) -> (y, log_abs_det)`` and
    ``inverse(y, context=None) -> (x, log_abs_det)`` on tensors of shape ``(batch, *event)``;
    ``context`` is ``None`` or a ``(batch, context_dim)`` tensor. ``log_abs_det`` has shape
    ``(batch,)`` and is log|det| of the Jacobian of the map that was applied, so the inverse's is
    minus the forward's at the matching point. Layers without a network accept a context and
    ignore it; layers with one take ``context_dim`` (0: unconditional) and feed it to the network.

    >>> import math
    >>> import torch
    >>> from flowforge.transforms import Transform
    >>> class Double(Transform):
    ...     def forward(self, x, context=None):
    ...         return 2 * x, x.new_full(x.shape[:1], x[0].numel() * math.log(2))
    ...     def inverse(self, y, context=None):
    ...         return y / 2, y.new_full(y.shape[:1], -y[0].numel() * math.log(2))
    >>> Double()(torch.ones(1, 3))[1]
    tensor([2.0794])
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


class VolumePreserving(Transform):
    """A transform whose log|det J| is 0 everywhere: subclasses give ``map`` and ``unmap``."""

    def map(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def unmap(self, y: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.map(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.unmap(y), y.new_zeros(y.shape[0])


class Compose(Transform):
    """Apply transforms in order, each given the same context; the inverse runs them in reverse
    and log-dets add: log|det J_{g∘f}(x)| = log|det J_f(x)| + log|det J_g(f(x))|.

    >>> import torch
    >>> from flowforge.transforms import Compose, Reverse
    >>> y, log_abs_det = Compose([Reverse(), Reverse()])(torch.tensor([[1.0, 2.0]]))
    >>> y, log_abs_det
    (tensor([[1., 2.]]), tensor([0.]))
    """

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, log_abs_det = t(x, context)
            total = total + log_abs_det
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for t in reversed(self.transforms):
            y, log_abs_det = t.inverse(y, context)
            total = total + log_abs_det
        return y, total


class Inverse(Transform):
    """``transform`` with its directions swapped: forward is its inverse and vice versa.

    >>> import torch
    >>> from flowforge.transforms import Shift, Inverse
    >>> Inverse(Shift(1.0))(torch.zeros(1, 2))[0]
    tensor([[-1., -1.]])
    """

    def __init__(self, transform: Transform):
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(y, context)


def check_context(context: Tensor | None, context_dim: int, batch: int, layer: str) -> Tensor | None:
    """The context a conditioned layer may use: ``None`` when it has none, else a (batch, context_dim) tensor."""
    if context_dim == 0:
        return None
    if context is None:
        raise ValueError(f"{layer} is conditional (context_dim={context_dim}) and needs a context")
    if context.dim() != 2 or context.shape[1] != context_dim or context.shape[0] not in (1, batch):
        raise ValueError(f"{layer} expects a context of shape ({batch}, {context_dim}), got {tuple(context.shape)}")
    return context.expand(batch, context_dim)


__all__ = ["Transform", "VolumePreserving", "Compose", "Inverse", "check_context"]
