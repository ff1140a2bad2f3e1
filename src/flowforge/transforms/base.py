"""The invertible-transform interface and composition.

A transform maps x to y = f(x) and reports log|det J_f(x)| per sample:

    log p_x(x) = log p_y(f(x)) + log|det J_f(x)|
"""

from __future__ import annotations

from typing import Iterable

from torch import Tensor, nn


class Transform(nn.Module):
    """An invertible map with a tractable log-determinant.

    Subclasses implement ``forward(x) -> (y, log_abs_det)`` and
    ``inverse(y) -> (x, log_abs_det)``, where ``log_abs_det`` has shape ``(batch,)``
    and is log|det| of the Jacobian of the map that was applied (so the inverse's is
    minus the forward's at the matching point).
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


class Compose(Transform):
    """Apply transforms in order; the inverse runs them in reverse and log-dets add.

    >>> from flowforge.transforms import Compose, Reverse
    >>> y, ladj = Compose([Reverse(), Reverse()])(torch.randn(5, 3))
    """

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ladj = t(x)
            total = total + ladj
        return x, total

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for t in reversed(self.transforms):
            y, ladj = t.inverse(y)
            total = total + ladj
        return y, total

