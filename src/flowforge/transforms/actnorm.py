"""Activation normalisation (Glow, Kingma & Dhariwal 2018): a learned affine map per channel.

    y = (x + bias) · exp(log_scale)    per channel,    log|det J| = (H·W) · Σ_c log_scale_c

The first batch it sees in training mode sets bias and scale so that it leaves with zero mean and
unit variance per channel (data-dependent initialisation); after that both are ordinary parameters.
A module is built in training mode, so the first ``log_prob`` of a new flow initialises it: give it
a representative batch first (the trainer's first step does), or call ``flow.eval()``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowforge.transforms.base import Transform


class ActNorm(Transform):
    """Per-channel ``(x + bias) · exp(log_scale)`` on (B, C, *spatial) tensors (images or vectors).

    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions", arXiv:1807.03039.

    The ``initialized`` buffer is saved with the weights, so a loaded model is never
    re-initialised. Initialisation happens on the first ``forward`` in training mode whose batch
    holds at least two values per channel (one row of a vector has no spread to divide by: it
    would set a scale of 1/√eps); under ``torch.distributed`` the statistics are those of the
    global batch, so every rank agrees.

    >>> import torch
    >>> from flowforge.transforms import ActNorm
    >>> norm = ActNorm(3)
    >>> y, log_abs_det = norm(5 + 2 * torch.randn(64, 3, 4, 4))
    >>> bool(y.mean((0, 2, 3)).abs().max() < 1e-5), bool(norm.initialized)
    (True, True)
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        if channels < 1:
            raise ValueError(f"ActNorm needs at least one channel, got {channels}")
        self.eps = eps
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _shaped(self, v: Tensor, x: Tensor) -> Tensor:
        return v.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias = -mean and log_scale = -log std per channel from the batch ``x`` (all ranks' batches)."""
        reduce = [0, *range(2, x.dim())]
        x64 = x.detach().double()
        count = torch.full((x.shape[1],), float(x[:, 0].numel()), dtype=torch.float64, device=x.device)
        stats = torch.stack([x64.sum(reduce), (x64 * x64).sum(reduce), count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        total, squares, count = stats
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
        self.bias.copy_(-mean.to(self.bias.dtype))
        self.log_scale.copy_((-0.5 * torch.log(var + self.eps)).to(self.log_scale.dtype))
        self.initialized.fill_(True)

    def log_abs_det(self, x: Tensor) -> Tensor:
        pixels = math.prod(x.shape[2:])
        return (pixels * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized) and x[:, 0].numel() > 1:  # a spread to measure
            self.initialize(x)
        y = (x + self._shaped(self.bias, x)) * self._shaped(self.log_scale, x).exp()
        return y, self.log_abs_det(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = y * self._shaped(-self.log_scale, y).exp() - self._shaped(self.bias, y)
        return x, -self.log_abs_det(y)
