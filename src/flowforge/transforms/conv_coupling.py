"""Glow's convolutional coupling: half the channels scale and shift the other half.

    x = (x_a, x_b) by channels,   y_a = x_a,   y_b = x_b · s(x_a) + t(x_a),   log|det J| = Σ log s(x_a)

s and t come from a small CNN of x_a whose last convolution starts at zero, so the layer starts
as y_b = x_b · s(0) (the identity for the "tanh" and "additive" scales).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.transforms.base import Transform

SCALES = ("sigmoid", "tanh", "additive")


def log_scale(raw: Tensor, kind: str) -> Tensor:
    """log s from the network's raw output.

    "sigmoid": s = sigmoid(raw + 2) ∈ (0, 1), Glow's choice (starts at 0.88, never expands);
    "tanh": s = exp(tanh(raw)) ∈ (1/e, e), as RealNVP's vector coupling; "additive": s = 1 (NICE).
    """
    if kind == "sigmoid":
        return F.logsigmoid(raw + 2.0)
    if kind == "tanh":
        return torch.tanh(raw)
    if kind == "additive":
        return torch.zeros_like(raw)
    raise ValueError(f"unknown coupling scale {kind!r}; choose from {', '.join(SCALES)}")


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3×3 convolution whose weights and bias start at zero (its output starts at 0)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def coupling_cnn(in_channels: int, out_channels: int, hidden: int = 512, depth: int = 2) -> nn.Sequential:
    """Glow's coupling network: 3×3 conv → ReLU → (depth − 1) × [1×1 conv → ReLU] → zero-started 3×3 conv.

    >>> coupling_cnn(2, 4, hidden=8)(torch.randn(1, 2, 6, 6)).abs().max().item()
    0.0
    """
    if hidden < 1 or depth < 1:
        raise ValueError("a coupling network needs hidden >= 1 and depth >= 1")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
    layers.append(zero_conv(hidden, out_channels))
    return nn.Sequential(*layers)


class ChannelCoupling(Transform):
    """Affine (or additive) coupling over a channel split of (B, C, H, W) images.

    The first ⌊C/2⌋ channels condition the rest; ``flip`` swaps the roles. ``scale`` is one of
    :data:`SCALES`.

    >>> x = torch.randn(2, 4, 8, 8)
    >>> y, log_abs_det = ChannelCoupling(4, hidden=16)(x)
    >>> torch.equal(y[:, :2], x[:, :2])    # the conditioning half passes unchanged
    True
    """

    def __init__(self, channels: int, hidden: int = 512, depth: int = 2, scale: str = "sigmoid",
                 flip: bool = False):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        log_scale(torch.zeros(()), scale)  # refuse an unknown scale now
        self.scale, self.flip = scale, flip
        self.sizes = (channels // 2, channels - channels // 2)
        conditioning, transformed = self.sizes[::-1] if flip else self.sizes
        outputs = transformed if scale == "additive" else 2 * transformed
        self.net = coupling_cnn(conditioning, outputs, hidden, depth)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first, second = x.split(self.sizes, dim=1)
        return (second, first) if self.flip else (first, second)

    def _join(self, conditioning: Tensor, transformed: Tensor) -> Tensor:
        return torch.cat([transformed, conditioning] if self.flip else [conditioning, transformed], dim=1)

    def _scale_shift(self, conditioning: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(conditioning)
        if self.scale == "additive":
            return torch.zeros_like(h), h
        raw, shift = h.chunk(2, dim=1)
        return log_scale(raw, self.scale), shift

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        conditioning, transformed = self._split(x)
        log_s, shift = self._scale_shift(conditioning)
        y = transformed * log_s.exp() + shift
        return self._join(conditioning, y), log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        conditioning, transformed = self._split(y)
        log_s, shift = self._scale_shift(conditioning)
        x = (transformed - shift) * (-log_s).exp()
        return self._join(conditioning, x), -log_s.flatten(1).sum(1)
