"""RealNVP's affine coupling layer (Dinh et al., 2017).

With a binary mask b, the masked features pass unchanged and condition a scale s and a
translation t for the others:

    y_b = x_b,    y_~b = x_~b · exp(s(x_b)) + t(x_b),    log|det J| = Σ s(x_b)

The Jacobian is triangular, so its log-determinant costs O(D) instead of O(D³).

With ``mixed_precision`` the s/t network runs in bfloat16 (about twice the matrix throughput
where the hardware has it). The coupling stays exact: s and t are the same numbers in both
directions, the affine update and log|det J| = Σ s are computed in float32, so the flow is
exactly invertible and its density exactly normalised; only the network is coarser.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.nets import mlp
from flowforge.transforms.base import Transform


class AffineCoupling(Transform):
    """Affine coupling with an arbitrary binary mask (1 = passes through and conditions).

    s and t come from one fused MLP with two heads that widens from d inputs to
    ``hidden`` units for ``depth`` layers and narrows to the D - d outputs of each head;
    s is bounded by tanh as in the book. Only the d conditioning features enter the
    network and only the D - d others are transformed: no work is spent on masked zeros.

    >>> layer = AffineCoupling(torch.tensor([1, 1, 0]), hidden=16, depth=2)  # D=3, d=2
    >>> y, log_abs_det = layer(torch.randn(8, 3))
    """

    def __init__(self, mask: Tensor | list[int], hidden: int = 256, depth: int = 4,
                 activation: str = "relu", mixed_precision: bool = False):
        super().__init__()
        mask = torch.as_tensor(mask).flatten()
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("the coupling mask must hold only 0s and 1s")
        mask = mask.bool()
        d, dim = int(mask.sum()), mask.numel()
        if d == 0 or d == dim:
            raise ValueError(f"the coupling mask must pass some but not all features; got d={d} of D={dim}")
        self.register_buffer("mask", mask)
        self.register_buffer("cond_idx", mask.nonzero().flatten())
        self.register_buffer("trans_idx", (~mask).nonzero().flatten())
        # Output of torch.cat([conditioning, transformed]) put back in feature order.
        self.register_buffer("unshuffle", torch.argsort(torch.cat([self.cond_idx, self.trans_idx])))
        self.net = mlp(d, 2 * (dim - d), hidden, depth, activation)
        # A buffer, so the choice travels with the weights: a model runs as it was trained.
        self.register_buffer("bf16_network", torch.tensor(bool(mixed_precision)))

    def _scale_shift(self, x_cond: Tensor) -> tuple[Tensor, Tensor]:
        if x_cond.dtype == torch.float32 and self.bf16_network:
            with torch.autocast(x_cond.device.type, dtype=torch.bfloat16):
                h = self.net(x_cond)
            h = h.float()
        else:
            h = self.net(x_cond)
        raw_s, t = h.chunk(2, dim=1)
        return torch.tanh(raw_s), t

    def _assemble(self, x_cond: Tensor, x_trans: Tensor) -> Tensor:
        return torch.cat([x_cond, x_trans], dim=1)[:, self.unshuffle]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_cond, x_trans = x[:, self.cond_idx], x[:, self.trans_idx]
        s, t = self._scale_shift(x_cond)
        return self._assemble(x_cond, x_trans * s.exp() + t), s.sum(dim=1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y_cond, y_trans = y[:, self.cond_idx], y[:, self.trans_idx]
        s, t = self._scale_shift(y_cond)
        return self._assemble(y_cond, (y_trans - t) * (-s).exp()), -s.sum(dim=1)
