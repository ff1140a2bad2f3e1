"""RealNVP's image coupling (Dinh et al., 2017): a binary mask b over (C, H, W) picks what conditions.

    y = b⊙x + (1−b)⊙(x⊙s(b⊙x) + t(b⊙x)),    log|det J| = Σ (1−b)⊙log s(b⊙x)

Two masks are used: a spatial checkerboard (same on every channel) and a channel-wise one
(the first half of the channels). Either parity gives the complementary mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.transforms.base import Transform
from flowforge.transforms.conv_coupling import coupling_cnn, log_scale


def checkerboard_mask(shape: tuple[int, int, int], parity: int = 0) -> Tensor:
    """1 where (row + column + parity) is even, on every channel: shape (C, H, W).

    >>> checkerboard_mask((1, 2, 2))[0].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    c, h, w = shape
    board = (torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1) + parity) % 2 == 0
    return board.expand(c, h, w).float()


def channel_mask(shape: tuple[int, int, int], parity: int = 0) -> Tensor:
    """1 on the first ⌊C/2⌋ channels (parity 0) or on the others (parity 1): shape (C, H, W).

    >>> channel_mask((4, 1, 1)).flatten().tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    c, h, w = shape
    first = (torch.arange(c) < c // 2).view(c, 1, 1).expand(c, h, w).float()
    return first if parity % 2 == 0 else 1 - first


class MaskedCoupling(Transform):
    """Affine coupling with any binary (C, H, W) mask (1 = passes through and conditions).

    The CNN sees the masked image and the mask itself (so it knows which pixels are given) and
    outputs log s and t for every pixel; only the unmasked ones are used.

    >>> layer = MaskedCoupling(checkerboard_mask((1, 4, 4)), hidden=8)
    >>> y, log_abs_det = layer(torch.randn(3, 1, 4, 4))
    """

    def __init__(self, mask: Tensor, hidden: int = 64, depth: int = 2, scale: str = "tanh"):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() != 3 or not ((mask == 0) | (mask == 1)).all():
            raise ValueError("the coupling mask must be a (C, H, W) tensor of 0s and 1s")
        if mask.sum() == 0 or mask.sum() == mask.numel():
            raise ValueError("the coupling mask must pass some but not all pixels")
        log_scale(torch.zeros(()), scale)  # refuse an unknown scale now
        self.scale = scale
        self.register_buffer("mask", mask)
        channels = mask.shape[0]
        self.net = coupling_cnn(2 * channels, 2 * channels, hidden, depth)

    def _scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        given = x * self.mask
        raw, shift = self.net(torch.cat([given, self.mask.expand_as(x)], dim=1)).chunk(2, dim=1)
        free = 1 - self.mask
        return log_scale(raw, self.scale) * free, shift * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_s, shift = self._scale_shift(x)
        return x * log_s.exp() + shift, log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        log_s, shift = self._scale_shift(y)
        return (y - shift) * (-log_s).exp(), -log_s.flatten(1).sum(1)
