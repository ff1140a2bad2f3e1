"""Space-to-depth: trade resolution for channels, so that couplings reach further each level.

    (C, H, W) → (4C, H/2, W/2),   each 2×2 patch of a channel becomes 4 channels;  log|det J| = 0
"""

from __future__ import annotations

from torch import Tensor

from flowforge.transforms.base import VolumePreserving


def squeeze(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, 4C, H/2, W/2); channel 4c + 2i + j holds pixel (i, j) of each patch of channel c."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeezing needs an even height and width, got {h}×{w}")
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(y: Tensor) -> Tensor:
    """The inverse of :func:`squeeze`: (B, 4C, H, W) → (B, C, 2H, 2W)."""
    b, c4, h, w = y.shape
    if c4 % 4:
        raise ValueError(f"unsqueezing needs a multiple of 4 channels, got {c4}")
    c = c4 // 4
    return y.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


class Squeeze(VolumePreserving):
    """(B, C, H, W) → (B, 4C, H/2, W/2), a fixed permutation of the pixels (RealNVP's squeezing:
    Dinh et al. 2017, "Density estimation using Real NVP", arXiv:1605.08803).

    >>> import torch
    >>> from flowforge.transforms import Squeeze
    >>> Squeeze()(torch.zeros(2, 3, 8, 8))[0].shape
    torch.Size([2, 12, 4, 4])
    """

    def map(self, x: Tensor) -> Tensor:
        return squeeze(x)

    def unmap(self, y: Tensor) -> Tensor:
        return unsqueeze(y)


class Unsqueeze(VolumePreserving):
    """(B, 4C, H, W) → (B, C, 2H, 2W): :class:`Squeeze` run backwards (ends a multi-scale level).

    >>> import torch
    >>> from flowforge.transforms import Unsqueeze
    >>> Unsqueeze()(torch.zeros(2, 12, 4, 4))[0].shape
    torch.Size([2, 3, 8, 8])
    """

    def map(self, x: Tensor) -> Tensor:
        return unsqueeze(x)

    def unmap(self, y: Tensor) -> Tensor:
        return squeeze(y)
