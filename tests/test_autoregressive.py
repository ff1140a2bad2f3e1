"""MADE, masked autoregressive transforms (affine and spline), their inverse (IAF), and the NSF and
MAF models: the shared base, the autoregressive property, densities that integrate to 1."""

import math

import pytest
import torch

from flowforge.models import MAF, NSF, build_model
from flowforge.nets import MADE
from flowforge.transforms.elementwise import affine_or_additive
from flowforge.transforms import Affine, Inverse, MaskedAutoregressive, RationalQuadraticSpline
from test_flow import grid_integral, perturbed
from transform_base import TransformTests


class TestMaskedAutoregressiveAffine(TransformTests):
    shape = (4,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return MaskedAutoregressive(4, Affine(bound=3.0), hidden=16, depth=2, context_dim=context_dim, order=[2, 0, 3, 1])


class TestMaskedAutoregressiveSpline(TransformTests):
    shape = (3,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return MaskedAutoregressive(3, RationalQuadraticSpline(4, 3.0), hidden=16, depth=2, context_dim=context_dim)

    def inputs(self, batch=5):  # some features in the spline's tails
        return 2.5 * super().inputs(batch)


class TestInverseAutoregressive(TransformTests):
    shape = (3,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return Inverse(MaskedAutoregressive(3, Affine(), hidden=16, depth=1, context_dim=context_dim, order=[1, 2, 0]))


class TestOneFeatureAutoregressive(TransformTests):
    shape = (1,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return MaskedAutoregressive(1, Affine(), hidden=8, depth=1, context_dim=context_dim)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("context_dim", [0, 2])
def test_the_jacobian_is_triangular_in_the_chosen_order(seed, context_dim):
    generator = torch.Generator().manual_seed(seed)
    dim = 5
    order = torch.randperm(dim, generator=generator)
    layer = perturbed(MaskedAutoregressive(dim, Affine(), hidden=24, depth=2, context_dim=context_dim,
                                           order=order), seed).double()
    x = torch.randn(1, dim, dtype=torch.float64, generator=generator)
    context = torch.randn(1, context_dim, dtype=torch.float64, generator=generator) if context_dim else None
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, dim), context)[0].flatten(), x[0])
    in_order = jacobian[order][:, order]  # rows and columns in autoregressive order
    assert torch.equal(torch.triu(in_order, 1), torch.zeros_like(in_order))  # nothing depends on later features
    assert (torch.tril(in_order, -1).abs() > 1e-8).sum() >= dim  # and earlier features do matter


def test_made_outputs_see_only_earlier_features():
    made = perturbed(MADE(4, params=3, hidden=32, depth=3, order=[3, 1, 0, 2]), 0)
    x = torch.randn(1, 4, requires_grad=True)
    out = made(x).view(3, 4)  # block p holds parameter p of each feature
    degrees = made.degrees
    for feature in range(4):
        grad = torch.autograd.grad(out[:, feature].sum(), x, retain_graph=True)[0][0]
        assert (grad[degrees >= degrees[feature]] == 0).all()


def test_made_refuses_an_order_that_is_not_a_permutation():
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, params=2, order=[0, 0, 1])


@pytest.mark.parametrize("build", [lambda: NSF(2, num_layers=3, bins=6, hidden=16),
                                   lambda: NSF(2, num_layers=3, bins=6, hidden=16, autoregressive=True, lu=True),
                                   lambda: MAF(2, num_layers=3, hidden=16)],
                         ids=["nsf-coupling", "nsf-autoregressive-lu", "maf"])
def test_models_density_integrates_to_one(build):
    torch.manual_seed(0)
    flow = perturbed(build(), scale=0.15).eval()
    assert abs(grid_integral(flow, (-10, 10), (-10, 10), 700) - 1) < 0.02


@pytest.mark.parametrize("name", ["nsf", "maf"])
def test_models_are_registered_and_conditional(name):
    flow = build_model(name, 3, num_layers=2, hidden=16, context_dim=2, standardize=True)
    context = torch.randn(4, 2)
    x = flow.sample((6,), context=context)
    assert x.shape == (6, 4, 3) and flow.log_prob(x, context).shape == (6, 4)


def test_affine_bound_widens_the_tanh_scale_and_refuses_nonsense():
    raw = torch.tensor([[-50.0, 0.0, 50.0, 0.0, 0.0, 0.0]])  # (raw, shift) of 3 elements
    _, log_der = Affine(bound=3.0)(torch.ones(1, 3), raw)
    assert torch.allclose(log_der, torch.tensor([[-3.0, 0.0, 3.0]]))
    assert torch.allclose(Affine()(torch.ones(1, 3), raw)[1], torch.tensor([[-1.0, 0.0, 1.0]]))
    for bad in (dict(bound=0.0), dict(bound=-1.0), dict(bound=math.inf), dict(bound=math.nan), dict(bound="3"),
                dict(bound=True), dict(scale="sigmoid", bound=3.0)):
        with pytest.raises(ValueError, match="bound"):
            Affine(**bad)
    with pytest.raises(ValueError, match="bound"):
        affine_or_additive("additive", 3.0)
