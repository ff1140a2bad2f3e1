"""Invertible layers. Each knows its forward, its inverse and log|det J|, nothing else."""

from flowforge.transforms.actnorm import ActNorm
from flowforge.transforms.base import Compose, Transform
from flowforge.transforms.conv_coupling import ChannelCoupling
from flowforge.transforms.coupling import AffineCoupling
from flowforge.transforms.invconv import InvConv1x1
from flowforge.transforms.masked_coupling import MaskedCoupling, channel_mask, checkerboard_mask
from flowforge.transforms.multiscale import Split
from flowforge.transforms.permutation import Permutation, Reverse
from flowforge.transforms.pixels import Logit, Shift
from flowforge.transforms.squeeze import Squeeze, Unsqueeze
from flowforge.transforms.standardize import Standardize, fit_standardization

__all__ = ["Transform", "Compose", "AffineCoupling", "Permutation", "Reverse", "Standardize", "fit_standardization",
           "ActNorm", "InvConv1x1", "ChannelCoupling", "MaskedCoupling", "checkerboard_mask", "channel_mask",
           "Squeeze", "Unsqueeze", "Split", "Logit", "Shift"]
