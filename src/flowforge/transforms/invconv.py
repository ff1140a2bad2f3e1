"""Glow's invertible 1×1 convolution: a learned C×C matrix applied at every pixel.

    y[:, :, h, w] = W · x[:, :, h, w],    log|det J| = H·W · log|det W|

With ``lu=True`` W is kept factored, W = P · L · (U + diag(s)) (P a fixed permutation, L unit
lower-, U strictly upper-triangular), so log|det W| = Σ log|s| costs O(C) instead of O(C³).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowforge.transforms.base import Transform


class InvConv1x1(Transform):
    """A learned channel-mixing matrix, a generalised permutation; starts as a random rotation.

    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions", arXiv:1807.03039.

    Works on (B, C, *spatial) tensors. ``weight()`` gives W as a matrix in both variants, so a
    plain (``lu=False``, log-det by ``slogdet``) and an LU layer with the same W agree exactly.

    >>> import torch
    >>> from flowforge.transforms import InvConv1x1
    >>> conv = InvConv1x1(4)
    >>> y, log_abs_det = conv(torch.randn(2, 4, 8, 8))
    >>> bool(log_abs_det.abs().max() < 1e-4)    # a rotation keeps volume
    True
    """

    def __init__(self, channels: int, lu: bool = True):
        super().__init__()
        if channels < 1:
            raise ValueError(f"InvConv1x1 needs at least one channel, got {channels}")
        self.lu = lu
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        if not lu:
            self.matrix = nn.Parameter(rotation)
            return
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = upper.diagonal()
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign_s", diagonal.sign())
        self.register_buffer("lower_mask", torch.ones(channels, channels).tril(-1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(diagonal.abs().log())

    def weight(self) -> Tensor:
        """W as a (C, C) matrix."""
        if not self.lu:
            return self.matrix
        eye = torch.eye(self.log_s.numel(), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.permutation @ lower @ upper

    def log_abs_det_weight(self) -> Tensor:
        """log|det W|: Σ log|s| for the LU form, ``slogdet`` for the plain one."""
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(self.matrix)[1]

    def _mix(self, matrix: Tensor, x: Tensor) -> Tensor:
        return torch.einsum("ij,bj...->bi...", matrix, x)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_abs_det = math.prod(x.shape[2:]) * self.log_abs_det_weight()
        return self._mix(self.weight(), x), log_abs_det.expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_abs_det = -math.prod(y.shape[2:]) * self.log_abs_det_weight()
        return self._mix(torch.linalg.inv(self.weight()), y), log_abs_det.expand(y.shape[0])
