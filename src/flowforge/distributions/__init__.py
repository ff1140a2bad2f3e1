"""Base distributions and flows over data."""

from flowforge.distributions.flow import Flow
from flowforge.distributions.normal import StandardNormal

__all__ = ["Flow", "StandardNormal"]
