"""Invertible layers. Each knows its forward, its inverse and log|det J|, given an optional context."""

from flowforge.transforms.actnorm import ActNorm
from flowforge.transforms.autoregressive import MaskedAutoregressive
from flowforge.transforms.base import Compose, Inverse, Transform, VolumePreserving
from flowforge.transforms.coupling import (AffineCoupling, ChannelCoupling, ChannelSplit, Coupling, FeatureMask,
                                           Mask, MaskedCoupling, PixelMask, SplineCoupling, channel_mask,
                                           checkerboard_mask)
from flowforge.transforms.spline import RationalQuadraticSpline
from flowforge.transforms.elementwise import Additive, Affine, ElementwiseMap
from flowforge.transforms.invconv import InvConv1x1
from flowforge.transforms.multiscale import Split
from flowforge.transforms.permutation import Permutation, Reverse
from flowforge.transforms.pixels import Logit, Shift
from flowforge.transforms.squeeze import Squeeze, Unsqueeze
from flowforge.transforms.standardize import Standardize, StandardizeContext, Whiten, fit_standardization

__all__ = ["Transform", "VolumePreserving", "Compose", "Inverse",
           "Coupling", "Mask", "FeatureMask", "ChannelSplit", "PixelMask", "ElementwiseMap", "Affine", "Additive",
           "AffineCoupling", "SplineCoupling", "ChannelCoupling", "MaskedCoupling", "checkerboard_mask", "channel_mask",
           "RationalQuadraticSpline", "MaskedAutoregressive",
           "Permutation", "Reverse", "Standardize", "StandardizeContext", "Whiten", "fit_standardization",
           "ActNorm", "InvConv1x1", "Squeeze", "Unsqueeze", "Split", "Logit", "Shift"]
