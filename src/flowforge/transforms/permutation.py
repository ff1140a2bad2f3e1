"""Fixed permutations of the feature dimension: volume preserving, log|det J| = 0."""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.transforms.base import Transform


class Permutation(Transform):
    """y = x[:, perm].

    >>> Permutation(torch.tensor([2, 0, 1]))(torch.arange(3.).view(1, 3))[0]
    tensor([[2., 0., 1.]])
    """

    def __init__(self, perm: Tensor):
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(len(perm))):
            raise ValueError(f"not a permutation of 0..{len(perm) - 1}: {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[:, self.inv_perm], y.new_zeros(y.shape[0])


class Reverse(Transform):
    """Reverse the order of the features: y = x[:, ::-1]."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y.flip(1), y.new_zeros(y.shape[0])
