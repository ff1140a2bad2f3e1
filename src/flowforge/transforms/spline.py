"""The monotone rational-quadratic spline of neural spline flows, as an element-wise map.

On [−B, B] the map is a rational-quadratic spline through K + 1 knots (x_k, y_k) with positive
derivatives d_k at the knots; outside it is the identity (linear tails of slope 1, so value and
derivative are continuous at ±B). In bin k, with ξ = (x − x_k)/w_k and s_k = h_k/w_k:

    y = y_k + h_k [s_k ξ² + d_k ξ(1−ξ)] / [s_k + (d_k + d_{k+1} − 2 s_k) ξ(1−ξ)]

Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032 (Gregory & Delbourgo's spline).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.transforms.elementwise import ElementwiseMap


def _knots(raw: Tensor, bound: float, minimum: float, dim: int = 1) -> Tensor:
    """Knot positions (…, K+1) from −B to B from raw bin sizes along ``dim`` (moved last), each bin
    at least ``minimum``·2B. (A softmax written out: torch's is slow for a handful of bins.)"""
    bins = raw.shape[dim]
    exp = (raw - raw.amax(dim=dim, keepdim=True)).exp()
    fractions = minimum + (1 - minimum * bins) * exp / exp.sum(dim=dim, keepdim=True)
    cumulative = torch.cumsum(fractions, dim=dim).movedim(dim, -1)
    cumulative = cumulative / cumulative[..., -1:]  # exactly 1 at the end, whatever the rounding
    return F.pad(2 * bound * cumulative - bound, (1, 0), value=-bound)


class RationalQuadraticSpline(ElementwiseMap):
    """A monotone rational-quadratic spline with ``bins`` bins on [−``bound``, ``bound``], the identity outside.

    Parameters per element: K bin widths, K bin heights (both through a softmax, each bin at
    least ``min_bin`` of the interval) and the K − 1 interior derivatives, d = ε + softplus(·)
    (positive by construction; 1 at the interval's ends). Raw parameters of zero give the
    identity, so a coupling whose network starts at zero starts as the identity. Inputs are
    clamped into the interval before the spline is evaluated, so far-away inputs (±1e6, say) and
    their gradients stay finite, and the inverse's discriminant is clamped at zero against
    rounding: never NaN, never an exception for finite input.

    >>> import torch
    >>> from flowforge.transforms import RationalQuadraticSpline
    >>> spline = RationalQuadraticSpline(bins=4, bound=3.0)
    >>> x = torch.tensor([[-5.0, 0.3, 2.9]])
    >>> y, log_der = spline(x, torch.zeros(1, spline.params_per_element * 3))
    >>> torch.allclose(y, x), torch.allclose(log_der, torch.zeros(1, 3), atol=1e-6)
    (True, True)
    """

    def __init__(self, bins: int = 8, bound: float = 3.0, min_bin: float = 1e-3, min_derivative: float = 1e-3):
        super().__init__()
        if bins < 1 or not bound > 0 or not 0 < min_bin * bins < 1 or not 0 < min_derivative < 1:
            raise ValueError("a spline needs bins >= 1, bound > 0, 0 < min_bin·bins < 1 and 0 < min_derivative < 1")
        self.bins, self.bound, self.min_bin, self.min_derivative = bins, float(bound), min_bin, min_derivative
        self.params_per_element = 3 * bins - 1
        # softplus(raw + shift) + ε = 1 at raw = 0: the identity start
        self._derivative_shift = math.log(math.expm1(1 - min_derivative))

    def _knots_and_derivatives(self, params: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """x and y knots, (*like.shape, 2, K + 1), and the derivatives at the K + 1 knots, (*like.shape, K + 1).
        Widths and heights go through one softmax together (half the small operations of two)."""
        raw = params.view(params.shape[0], self.params_per_element, *like.shape[1:])
        sizes_raw, derivatives_raw = raw.split([2 * self.bins, self.bins - 1], dim=1)
        knots = _knots(sizes_raw.unflatten(1, (2, self.bins)), self.bound, self.min_bin, dim=2).movedim(1, -2)
        interior = self.min_derivative + F.softplus(derivatives_raw.movedim(1, -1) + self._derivative_shift)
        return knots, F.pad(interior, (1, 1), value=1.0)

    def _spline(self, params: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(x knots, widths, y knots, heights, derivatives at the K + 1 knots), shaped (*like.shape, ·)."""
        knots, derivatives = self._knots_and_derivatives(params, like)
        sizes = knots[..., 1:] - knots[..., :-1]
        return knots[..., 0, :], sizes[..., 0, :], knots[..., 1, :], sizes[..., 1, :], derivatives

    def _bin(self, params: Tensor, value: Tensor, by_output: bool) -> tuple[Tensor, Tensor, "_Bin"]:
        """Whether each value lies in [−B, B], the value clamped there, and its bin's quantities,
        the bin found among the input knots (forward) or the output knots (inverse); the bin's two
        knots are read in one gather, their derivatives in another."""
        knots, derivatives = self._knots_and_derivatives(params, value)
        inside = (value >= -self.bound) & (value <= self.bound)
        clamped = value.clamp(-self.bound, self.bound)
        searched = knots[..., 1 if by_output else 0, :].contiguous()
        k = (torch.searchsorted(searched, clamped.unsqueeze(-1).contiguous(), right=True) - 1).clamp(0, self.bins - 1)
        index = torch.cat([k, k + 1], dim=-1)  # (…, 2): the bin's two knots
        ends = knots.gather(-1, index.unsqueeze(-2).expand(*k.shape[:-1], 2, 2))  # (…, 2, 2): x and y
        x, x_next, y, y_next = ends.flatten(-2).unbind(-1)
        d, d_next = derivatives.gather(-1, index).unbind(-1)
        return inside, clamped, _Bin.of(x, x_next - x, y, y_next - y, d, d_next)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        inside, u, b = self._bin(params, x, by_output=False)
        xi = ((u - b.x) / b.width).clamp(0, 1)
        xi_1mxi = xi * (1 - xi)
        denominator = b.denominator(xi_1mxi)
        y = b.y + b.height * (b.slope * xi * xi + b.d * xi_1mxi) / denominator
        return torch.where(inside, y, x), torch.where(inside, b.log_derivative(xi, xi_1mxi, denominator), 0.0)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        inside, v, b = self._bin(params, y, by_output=True)
        offset, curvature = v - b.y, b.d_next + b.d - 2 * b.slope
        a = b.height * (b.slope - b.d) + offset * curvature
        q = b.height * b.d - offset * curvature
        c = -b.slope * offset
        root = torch.sqrt((q * q - 4 * a * c).clamp_min(0))  # clamped against rounding, never NaN
        xi = (2 * c / (-q - root)).clamp(0, 1)  # the stable root: -q - √disc < 0 since q > 0 at ξ = 0
        xi_1mxi = xi * (1 - xi)
        log_derivative = b.log_derivative(xi, xi_1mxi, b.denominator(xi_1mxi))
        return torch.where(inside, b.x + xi * b.width, y), torch.where(inside, -log_derivative, 0.0)


class _Bin(NamedTuple):
    """One bin of each element's spline: its left knot (x, y), size (width, height), knot
    derivatives, and slope s = height / width (computed once)."""
    x: Tensor
    width: Tensor
    y: Tensor
    height: Tensor
    d: Tensor
    d_next: Tensor
    slope: Tensor

    @classmethod
    def of(cls, x: Tensor, width: Tensor, y: Tensor, height: Tensor, d: Tensor, d_next: Tensor) -> "_Bin":
        return cls(x, width, y, height, d, d_next, height / width)

    def denominator(self, xi_1mxi: Tensor) -> Tensor:
        """s + (d_{k+1} + d_k − 2s) ξ(1−ξ), given ξ(1−ξ)."""
        return self.slope + (self.d_next + self.d - 2 * self.slope) * xi_1mxi

    def log_derivative(self, xi: Tensor, xi_1mxi: Tensor, denominator: Tensor) -> Tensor:
        """log dy/dx at ξ: log of s² (d_{k+1} ξ² + 2 s ξ(1−ξ) + d_k (1−ξ)²) / denominator²."""
        s = self.slope
        numerator = s * s * (self.d_next * xi * xi + 2 * s * xi_1mxi + self.d * (1 - xi) ** 2)
        return torch.log(numerator) - 2 * torch.log(denominator)
