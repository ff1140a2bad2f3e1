"""The rational-quadratic spline: exact, monotone and finite at the knots, at ±B, just inside and
outside, far away, and for random float32 inputs; its coupling passes the shared base."""

import pytest
import torch

from flowforge.transforms import RationalQuadraticSpline, SplineCoupling
from transform_base import TransformTests

BINS, BOUND, ELEMENTS = 5, 3.0, 3


class TestSplineCoupling(TransformTests):
    shape = (4,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return SplineCoupling([1, 0, 0, 1], bins=BINS, bound=BOUND, hidden=16, depth=2, context_dim=context_dim)

    def inputs(self, batch=5):  # wide enough that some features fall in the tails, outside ±B
        return 2.5 * super().inputs(batch)


class TestSplineCouplingOddSplit(TestSplineCoupling):
    shape = (3,)

    def make(self, context_dim=0):
        return SplineCoupling([0, 1, 0], bins=3, bound=2.0, hidden=8, depth=1, context_dim=context_dim)


def spline_and_params(dtype, batch, seed=0):
    spline = RationalQuadraticSpline(BINS, BOUND)
    generator = torch.Generator().manual_seed(seed)
    params = 2 * torch.randn(batch, spline.params_per_element * ELEMENTS, generator=generator, dtype=torch.float64)
    return spline, params.to(dtype)


def hard_inputs(dtype) -> torch.Tensor:
    """Every knot of every element's spline, ±B, one float step either side of ±B, ±1e6, random values."""
    spline, params = spline_and_params(torch.float64, 1)
    knots = spline._spline(params, torch.zeros(1, ELEMENTS))[0][0]  # (ELEMENTS, BINS + 1)
    step = torch.finfo(dtype).eps * BOUND
    edges = torch.tensor([-BOUND, BOUND, -BOUND + step, BOUND - step, -BOUND - step, BOUND + step, 1e6, -1e6, 0.0])
    columns = [torch.cat([knots[e], edges, torch.empty(40).uniform_(-5, 5, generator=torch.Generator().manual_seed(e))])
               for e in range(ELEMENTS)]
    return torch.stack(columns, dim=1).to(dtype)  # (rows, ELEMENTS)


# float32: the round trip to 1e-4 inside the interval; log-dets agree to 1e-2 where the spline is
# nearly flat (slope e^-3.5), since there a rounding of y moves ξ, and log slope with it, by ~1e-3.
@pytest.mark.parametrize("dtype, tolerance, log_det_tolerance",
                         [(torch.float64, 1e-9, 1e-8), (torch.float32, 1e-4, 1e-2)])
def test_spline_is_finite_and_exact_at_knots_edges_and_far_away(dtype, tolerance, log_det_tolerance):
    x = hard_inputs(dtype)
    spline, params = spline_and_params(dtype, 1)
    params = params.expand(len(x), -1)
    y, log_der = spline(x, params)
    x_back, inverse_log_der = spline.inverse(y, params)
    assert torch.isfinite(y).all() and torch.isfinite(log_der).all() and torch.isfinite(x_back).all()
    assert torch.isfinite(inverse_log_der).all()
    inside = x.abs() <= BOUND
    assert ((x_back - x).abs()[inside] < tolerance * BOUND).all()
    assert torch.equal(y[~inside], x[~inside]) and torch.equal(x_back[~inside], x[~inside])  # identity tails
    assert ((log_der + inverse_log_der).abs() < log_det_tolerance).all()


def test_spline_gradients_are_finite_everywhere():
    x = hard_inputs(torch.float32).requires_grad_(True)
    spline, params = spline_and_params(torch.float32, 1)
    params = params.expand(len(x), -1).clone().requires_grad_(True)
    y, log_der = spline(x, params)
    back, inverse_log_der = spline.inverse(y.detach(), params)
    (y.sum() + log_der.sum() + back.sum() + inverse_log_der.sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(params.grad).all()


def test_spline_is_monotone_and_its_log_derivative_is_the_autograd_one():
    spline, params = spline_and_params(torch.float64, 1, seed=3)
    x = torch.linspace(-4, 4, 801, dtype=torch.float64).view(-1, 1).expand(-1, ELEMENTS).contiguous()
    params = params.expand(len(x), -1)
    y, log_der = spline(x, params)
    assert (y[1:] > y[:-1]).all()
    x.requires_grad_(True)
    slope = torch.autograd.grad(spline(x, params)[0].sum(), x)[0]
    assert torch.allclose(slope.log(), log_der, atol=1e-9)
    assert y[0, 0] == -4 and y[-1, 0] == 4  # the tails are the identity


def test_zero_parameters_give_the_identity():
    spline = RationalQuadraticSpline(bins=7, bound=2.0)
    x = torch.linspace(-3, 3, 50).view(-1, 1)
    y, log_der = spline(x, torch.zeros(50, spline.params_per_element))
    assert torch.allclose(y, x, atol=1e-6) and log_der.abs().max() < 1e-5


def test_spline_refuses_bad_settings():
    with pytest.raises(ValueError):
        RationalQuadraticSpline(bins=0)
    with pytest.raises(ValueError):
        RationalQuadraticSpline(bins=8, bound=-1.0)
