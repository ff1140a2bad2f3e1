"""Fixed preprocessing of pixel values x ∈ [0, 1] before an image flow, with exact Jacobians.

    Logit (RealNVP):  y = logit(p),  p = α + (1 − 2α)·x,   log|det J| = Σ [log(1 − 2α) − log p − log(1 − p)]
    Shift (Glow):     y = x + c,                    log|det J| = 0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.transforms.base import Transform, VolumePreserving


class Logit(Transform):
    """Map [0, 1] onto the real line, squeezed by α away from the edges where logit explodes
    (RealNVP's preprocessing: Dinh et al. 2017, arXiv:1605.08803).

    >>> import torch
    >>> from flowforge.transforms import Logit
    >>> y, log_abs_det = Logit(0.05)(torch.full((1, 1, 2, 2), 0.5))
    >>> y.flatten().tolist()
    [0.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"the logit's alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(p) - torch.log1p(-p)
        log_abs_det = (math.log1p(-2 * self.alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return y, log_abs_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        # log p + log(1 − p) with p = sigmoid(y), stable for large |y|
        log_p_one_minus_p = F.logsigmoid(y) + F.logsigmoid(-y)
        return x, (log_p_one_minus_p - math.log1p(-2 * self.alpha)).flatten(1).sum(1)


class Shift(VolumePreserving):
    """y = x + offset, volume preserving; Glow centres pixels with ``Shift(-0.5)``.

    >>> import torch
    >>> from flowforge.transforms import Shift
    >>> Shift(-0.5)(torch.ones(1, 3))[0].tolist()
    [[0.5, 0.5, 0.5]]
    """

    def __init__(self, offset: float):
        super().__init__()
        self.offset = float(offset)

    def map(self, x: Tensor) -> Tensor:
        return x + self.offset

    def unmap(self, y: Tensor) -> Tensor:
        return y - self.offset
