"""Benchmark targets whose true density is known in closed form, and their data.

* SLCP (Papamakarios et al. 2019, "Sequential Neural Likelihood", arXiv:1805.07226): θ ~ U(−3, 3)^5;
  x = four i.i.d. 2-D Gaussian draws with mean (θ1, θ2), standard deviations θ3², θ4² and
  correlation tanh(θ5). x is 8-D (draw 1's two coordinates, then draw 2's, …), θ 5-D.
* ``checkerboard`` and ``8gaussians``, as :mod:`flowforge.data.toy` draws them.

Every density is in data units, float64, and returns −inf off its support (never NaN).
"""

from __future__ import annotations

import math

import numpy as np

SLCP_DRAWS, SLCP_THETA = 4, 5
SLCP_DIM = 2 * SLCP_DRAWS


def slcp_simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs (θ, x), float64: θ (n, 5) from the prior, x (n, 8) from the simulator."""
    theta = rng.uniform(-3.0, 3.0, size=(n, SLCP_THETA))
    return theta, slcp_draw(theta, rng)


def slcp_draw(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The simulator: x (n, 8), float64, for parameters θ (n, 5)."""
    n = len(theta)
    s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, np.tanh(theta[:, 4])
    z = rng.standard_normal((n, SLCP_DRAWS, 2))
    first = s1[:, None] * z[..., 0]
    second = s2[:, None] * (rho[:, None] * z[..., 0] + np.sqrt(1 - rho * rho)[:, None] * z[..., 1])
    x = theta[:, None, :2] + np.stack([first, second], axis=-1)
    return x.reshape(n, SLCP_DIM)


def slcp_log_likelihood(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """log p(x | θ) of the SLCP simulator (closed form, float64), shape (n,)."""
    x, theta = np.asarray(x, np.float64), np.asarray(theta, np.float64)
    s1, s2 = theta[:, 2] ** 2, theta[:, 3] ** 2
    rho = np.tanh(theta[:, 4])
    one_minus = 1.0 / np.cosh(theta[:, 4]) ** 2  # 1 − tanh², without cancellation near |ρ| = 1
    draws = x.reshape(len(x), SLCP_DRAWS, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        u1 = (draws[..., 0] - theta[:, None, 0]) / s1[:, None]
        u2 = (draws[..., 1] - theta[:, None, 1]) / s2[:, None]
        quadratic = (u1 * u1 - 2 * rho[:, None] * u1 * u2 + u2 * u2) / one_minus[:, None]
        per_draw = -math.log(2 * math.pi) - np.log(s1 * s2)[:, None] - 0.5 * np.log(one_minus)[:, None] - 0.5 * quadratic
    return np.nan_to_num(per_draw.sum(axis=1), nan=-np.inf)


CHECKERBOARD_LOG_DENSITY = -math.log(32.0)  # uniform on 8 dark squares of side 2: area 32


def checkerboard_log_density(x: np.ndarray) -> np.ndarray:
    """:func:`flowforge.data.toy.checkerboard`'s density. Its draw is x1 ~ U(−2, 2),
    x2 = U(0, 1) − 2·Bernoulli(½) + (⌊x1⌋ mod 2), both scaled by 2: uniform (1/32) on the
    squares of side 2 in [−4, 4)² whose column and row indices ⌊x/2⌋ have an even sum."""
    x = np.asarray(x, np.float64)
    cells = np.floor(x / 2.0)
    inside = np.all((x >= -4.0) & (x < 4.0), axis=1) & (cells.sum(axis=1) % 2 == 0)
    return np.where(inside, CHECKERBOARD_LOG_DENSITY, -np.inf)


EIGHT_GAUSSIANS_STD = 0.5 / math.sqrt(2.0)


def eight_gaussians_centers() -> np.ndarray:
    angle = np.arange(8) * np.pi / 4
    return 4.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1) / math.sqrt(2.0)


def eight_gaussians_log_density(x: np.ndarray) -> np.ndarray:
    """:func:`flowforge.data.toy.eight_gaussians`' density: an equal mixture of 8 isotropic
    Gaussians of std 0.5/√2 centred at 4(cos kπ/4, sin kπ/4)/√2."""
    x = np.asarray(x, np.float64)
    var = EIGHT_GAUSSIANS_STD ** 2
    sq = ((x[:, None, :] - eight_gaussians_centers()[None]) ** 2).sum(-1)
    log_components = -sq / (2 * var) - math.log(2 * math.pi * var) - math.log(8.0)
    top = log_components.max(axis=1)
    return top + np.log(np.exp(log_components - top[:, None]).sum(axis=1))


TOY_LOG_DENSITIES = {"checkerboard": checkerboard_log_density, "8gaussians": eight_gaussians_log_density}
