"""The monotone rational-quadratic spline of neural spline flows, as an element-wise map.

On [−B, B] the map is a rational-quadratic spline through K + 1 knots (x_k, y_k) with positive
derivatives d_k at the knots; outside it is the identity (linear tails of slope 1, so value and
derivative are continuous at ±B). In bin k, with ξ = (x − x_k)/w_k and s_k = h_k/w_k:

    y = y_k + h_k [s_k ξ² + d_k ξ(1−ξ)] / [s_k + (d_k + d_{k+1} − 2 s_k) ξ(1−ξ)]

Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032 (Gregory & Delbourgo's spline).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.transforms.elementwise import ElementwiseMap


def _knots(raw: Tensor, bound: float, minimum: float) -> tuple[Tensor, Tensor]:
    """Knot positions (…, K+1) from −B to B and bin sizes (…, K) from raw bin sizes along dim 1,
    each bin at least ``minimum``·2B. (A softmax written out: torch's is slow for a handful of bins.)"""
    bins = raw.shape[1]
    exp = (raw - raw.amax(dim=1, keepdim=True)).exp()
    fractions = minimum + (1 - minimum * bins) * exp / exp.sum(dim=1, keepdim=True)
    cumulative = torch.cumsum(fractions, dim=1)
    cumulative = cumulative / cumulative[:, -1:]  # exactly 1 at the end, whatever the rounding
    knots = F.pad((2 * bound * cumulative - bound).movedim(1, -1), (1, 0), value=-bound)
    return knots, knots[..., 1:] - knots[..., :-1]


def _gather(values: Tensor, index: Tensor) -> Tensor:
    return values.gather(-1, index).squeeze(-1)


class RationalQuadraticSpline(ElementwiseMap):
    """A monotone rational-quadratic spline with ``bins`` bins on [−``bound``, ``bound``], the identity outside.

    Parameters per element: K bin widths, K bin heights (both through a softmax, each bin at
    least ``min_bin`` of the interval) and the K − 1 interior derivatives, d = ε + softplus(·)
    (positive by construction; 1 at the interval's ends). Raw parameters of zero give the
    identity, so a coupling whose network starts at zero starts as the identity. Inputs are
    clamped into the interval before the spline is evaluated, so far-away inputs (±1e6, say) and
    their gradients stay finite, and the inverse's discriminant is clamped at zero against
    rounding: never NaN, never an exception for finite input.

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

    def _spline(self, params: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(x knots, widths, y knots, heights, derivatives at the K + 1 knots), shaped (*like.shape, ·)."""
        raw = params.view(params.shape[0], self.params_per_element, *like.shape[1:])
        widths_raw, heights_raw, derivatives_raw = raw.split([self.bins, self.bins, self.bins - 1], dim=1)
        xs, widths = _knots(widths_raw, self.bound, self.min_bin)
        ys, heights = _knots(heights_raw, self.bound, self.min_bin)
        interior = self.min_derivative + F.softplus(derivatives_raw.contiguous() + self._derivative_shift)
        derivatives = F.pad(interior.movedim(1, -1), (1, 1), value=1.0)
        return xs, widths, ys, heights, derivatives

    def _bin(self, knots: Tensor, value: Tensor) -> Tensor:
        index = torch.searchsorted(knots.contiguous(), value.unsqueeze(-1).contiguous(), right=True) - 1
        return index.clamp(0, self.bins - 1)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        xs, widths, ys, heights, derivatives = self._spline(params, x)
        inside = (x >= -self.bound) & (x <= self.bound)
        u = x.clamp(-self.bound, self.bound)
        k = self._bin(xs, u)
        x_k, w, y_k, h = _gather(xs, k), _gather(widths, k), _gather(ys, k), _gather(heights, k)
        d_k, d_next = _gather(derivatives, k), _gather(derivatives, k + 1)
        s = h / w
        xi = ((u - x_k) / w).clamp(0, 1)
        mix = xi * (1 - xi)
        denominator = s + (d_next + d_k - 2 * s) * mix
        y = y_k + h * (s * xi * xi + d_k * mix) / denominator
        slope = s * s * (d_next * xi * xi + 2 * s * mix + d_k * (1 - xi) ** 2) / (denominator * denominator)
        return torch.where(inside, y, x), torch.where(inside, torch.log(slope), 0.0)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        xs, widths, ys, heights, derivatives = self._spline(params, y)
        inside = (y >= -self.bound) & (y <= self.bound)
        v = y.clamp(-self.bound, self.bound)
        k = self._bin(ys, v)
        x_k, w, y_k, h = _gather(xs, k), _gather(widths, k), _gather(ys, k), _gather(heights, k)
        d_k, d_next = _gather(derivatives, k), _gather(derivatives, k + 1)
        s = h / w
        offset, curvature = v - y_k, d_next + d_k - 2 * s
        a = h * (s - d_k) + offset * curvature
        b = h * d_k - offset * curvature
        c = -s * offset
        root = torch.sqrt((b * b - 4 * a * c).clamp_min(0))
        xi = (2 * c / (-b - root)).clamp(0, 1)  # the stable root: -b - √disc < 0 since b > 0 at ξ = 0
        mix = xi * (1 - xi)
        denominator = s + curvature * mix
        slope = s * s * (d_next * xi * xi + 2 * s * mix + d_k * (1 - xi) ** 2) / (denominator * denominator)
        return torch.where(inside, x_k + xi * w, y), torch.where(inside, -torch.log(slope), 0.0)
