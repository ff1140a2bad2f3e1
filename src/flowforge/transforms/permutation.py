"""Fixed permutations of the feature dimension: volume preserving, log|det J| = 0."""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.checks import whole_number
from flowforge.transforms.base import VolumePreserving


class Permutation(VolumePreserving):
    """y = x[:, perm], a fixed reordering of the features (placed between couplings so that every
    feature is transformed and conditions the others in turn). ``perm`` is the order itself, or a
    number of features n for a random order of them (from torch's generator: ``torch.manual_seed``
    fixes it; the order is a buffer, saved with the weights).

    >>> import torch
    >>> from flowforge.transforms import Permutation
    >>> Permutation(torch.tensor([2, 0, 1]))(torch.arange(3.).view(1, 3))[0]
    tensor([[2., 0., 1.]])
    >>> sorted(Permutation(5).perm.tolist())
    [0, 1, 2, 3, 4]
    """

    def __init__(self, perm: Tensor | list[int] | int):
        super().__init__()
        if isinstance(perm, int) or getattr(perm, "ndim", None) == 0:  # a number of features, not an order
            perm = torch.randperm(whole_number(perm, "a permutation's number of features"))
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.dim() != 1:
            raise ValueError(f"a permutation is one order of the features (a 1-D list), got shape {tuple(perm.shape)}")
        if sorted(perm.tolist()) != list(range(len(perm))):
            raise ValueError(f"not a permutation of 0..{len(perm) - 1}: {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def map(self, x: Tensor) -> Tensor:
        return x[:, self.perm]

    def unmap(self, y: Tensor) -> Tensor:
        return y[:, self.inv_perm]


class Reverse(VolumePreserving):
    """Reverse the order of the features: y = x[:, ::-1] (the book's alternating masks, as a layer).

    >>> import torch
    >>> from flowforge.transforms import Reverse
    >>> Reverse()(torch.tensor([[1.0, 2.0, 3.0]]))[0]
    tensor([[3., 2., 1.]])
    """

    def map(self, x: Tensor) -> Tensor:
        return x.flip(1)

    def unmap(self, y: Tensor) -> Tensor:
        return y.flip(1)
