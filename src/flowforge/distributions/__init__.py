"""Base distributions, flows over data, and the dequantisation bound for quantised data."""

from flowforge.distributions.base import (Base, ConditionalDiagonalNormal, DiagonalNormal, DistributionBase,
                                          GaussianBase, StandardNormal, as_base)
from flowforge.distributions.flow import Flow, FlowDistribution

__all__ = ["Flow", "FlowDistribution", "Base", "GaussianBase", "StandardNormal", "DiagonalNormal",
           "ConditionalDiagonalNormal", "DistributionBase", "as_base"]
