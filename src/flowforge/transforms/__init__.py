"""Invertible layers. Each knows its forward, its inverse and log|det J|, nothing else."""

from flowforge.transforms.base import Compose, Transform
from flowforge.transforms.coupling import AffineCoupling
from flowforge.transforms.permutation import Permutation, Reverse
from flowforge.transforms.standardize import Standardize

__all__ = ["Transform", "Compose", "AffineCoupling", "Permutation", "Reverse", "Standardize"]
