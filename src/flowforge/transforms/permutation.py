"""Fixed permutations of the feature dimension: volume preserving, log|det J| = 0."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from flowforge.transforms.base import VolumePreserving


def _is_count(value) -> bool:
    """An integer of any kind (Python's, NumPy's, a 0-d integer tensor), not a bool nor an order."""
    if isinstance(value, bool) or (torch.is_tensor(value) and (value.dim() or value.dtype == torch.bool)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


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
        if _is_count(perm):
            if perm < 1:
                raise ValueError(f"a permutation needs at least one feature, got {perm}")
            perm = torch.randperm(operator.index(perm))
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
