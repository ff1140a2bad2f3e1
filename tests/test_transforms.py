"""Every transform passes the shared base; a few layer-specific facts on top."""

import math

import numpy as np
import pytest
import torch

from flowforge.models import RealNVP
from flowforge.nets import MLPConditioner, native_bf16
from flowforge.transforms import (Additive, AffineCoupling, Compose, Coupling, FeatureMask, Inverse, Permutation,
                                  Reverse, Standardize, Whiten, fit_standardization)
from transform_base import TransformTests


class TestCouplingAlternating2D(TransformTests):
    shape = (2,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return AffineCoupling([1, 0], hidden=16, depth=2, context_dim=context_dim)


class TestCouplingD3Split2(TransformTests):
    shape = (3,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return AffineCoupling([1, 1, 0], hidden=16, depth=3, context_dim=context_dim)


class TestCouplingOddDimScatteredMask(TransformTests):
    shape = (5,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return AffineCoupling([0, 1, 0, 0, 1], hidden=8, depth=1, activation="tanh", context_dim=context_dim)


class TestCouplingWideScaleBound(TransformTests):
    shape = (3,)
    context_dims = (0, 2)

    def make(self, context_dim=0):  # the variational recipe's RealNVP: log s = 3 tanh(raw / 3)
        return AffineCoupling([1, 0, 1], hidden=8, depth=2, context_dim=context_dim, scale_bound=3.0)


class TestAdditiveCoupling(TransformTests):
    shape = (3,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return Coupling(FeatureMask([1, 0, 1]), MLPConditioner(2, 1, 1, hidden=8, depth=2, context_dim=context_dim),
                        Additive())


class TestInverseOfCoupling(TransformTests):
    shape = (3,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return Inverse(AffineCoupling([1, 0, 1], hidden=8, depth=2, context_dim=context_dim))


class TestPermutation(TransformTests):
    shape = (4,)

    def make(self, context_dim=0):
        return Permutation(torch.tensor([2, 0, 3, 1]))


class TestReverse(TransformTests):
    shape = (3,)

    def make(self, context_dim=0):
        return Reverse()


class TestStandardize(TransformTests):
    shape = (3,)

    def make(self, context_dim=0):
        s = Standardize(3)
        s.set_statistics(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 3.0, 1.5]))
        return s


class TestWhiten(TransformTests):
    shape = (3,)

    def make(self, context_dim=0):
        w = Whiten(3)
        rows = torch.randn(200, 3, generator=torch.Generator().manual_seed(3)) @ torch.tensor(
            [[2.0, 1.0, 0.5], [0.0, 0.5, -0.3], [0.0, 0.0, 0.2]]) + torch.tensor([1.0, -2.0, 0.5])
        fit_standardization(w, rows)
        return w


def test_whiten_then_a_standard_normal_is_the_fitted_full_covariance_gaussian():
    """A Whiten set from rows, before a standard normal, is the maximum-likelihood Gaussian of those rows
    (its ridge aside): what a whitened flow starts from."""
    from torch.distributions import MultivariateNormal
    from flowforge.distributions import Flow, StandardNormal
    rows = (torch.randn(400, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
            @ torch.tensor([[1.0, 0.9, 0.0], [0.0, 0.3, 2.0], [0.0, 0.0, 0.1]], dtype=torch.float64) + 5)
    flow = Flow(Whiten(3), StandardNormal(3)).double()
    fit_standardization(flow, rows)
    centred = rows - rows.mean(0)
    gaussian = MultivariateNormal(rows.mean(0), covariance_matrix=centred.T @ centred / len(rows))
    assert torch.allclose(flow.log_prob(rows), gaussian.log_prob(rows), atol=1e-4)
    assert Whiten(3).at_unit_scale()  # built as the identity
    assert not flow.transform.at_unit_scale()


def test_whiten_takes_collinear_columns_and_starts_at_the_baseline_gaussian():
    """Two copies of one column: the layer still has a factor, and with a standard normal after it scores
    the rows as the fitted Gaussian that training runs are compared with does (the same ridge)."""
    from flowforge.distributions import Flow, StandardNormal
    from flowforge.training.evaluate import gaussian_baseline_nll
    column = torch.randn(300, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    rows = torch.cat([column, column, torch.randn(300, 1, dtype=torch.float64) + column], 1)
    flow = Flow(Whiten(3), StandardNormal(3)).double()
    fit_standardization(flow, rows)
    y, log_abs_det = flow.transform(rows)
    assert torch.isfinite(y).all() and torch.isfinite(log_abs_det).all()
    baseline = gaussian_baseline_nll(rows.numpy(), rows.numpy())
    assert float(-flow.log_prob(rows).mean()) == pytest.approx(baseline, abs=1e-3)


def test_whiten_takes_inputs_of_another_dtype_both_ways():
    w = Whiten(2)
    fit_standardization(w, torch.randn(50, 2) @ torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    y = torch.randn(4, 2, dtype=torch.float64)
    x, _ = w.inverse(y)
    assert x.dtype == torch.float64 and torch.allclose(w(x)[0], y, atol=1e-5)


class TestCompose(TransformTests):
    shape = (3,)

    def make(self, context_dim=0):
        return Compose([AffineCoupling([1, 0, 1], hidden=8, depth=1), Reverse(),
                        AffineCoupling([0, 1, 1], hidden=8, depth=1)])


class TestRealNVPStack(TransformTests):
    shape = (4,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return RealNVP(4, num_layers=4, hidden=16, depth=2, standardize=True, context_dim=context_dim).transform


def test_coupling_starts_as_identity():
    layer = AffineCoupling([1, 0, 1], hidden=8, depth=2)
    x = torch.randn(6, 3)
    y, lad = layer(x)
    assert torch.equal(y, x) and torch.equal(lad, torch.zeros(6))


def test_coupling_leaves_masked_features_unchanged():
    layer = AffineCoupling([1, 1, 0], hidden=8, depth=2)
    for p in layer.parameters():
        p.data.normal_()
    x = torch.randn(6, 3)
    y, _ = layer(x)
    assert torch.equal(y[:, :2], x[:, :2]) and not torch.allclose(y[:, 2], x[:, 2])


def test_coupling_scale_is_tanh_bounded():
    layer = AffineCoupling([1, 0], hidden=8, depth=1)
    for p in layer.parameters():
        p.data.normal_(0, 50)
    _, lad = layer(torch.randn(100, 2) * 10)
    assert lad.abs().max() <= 1.0


@pytest.mark.parametrize("mask", [[1, 1], [0, 0], [1, 2], [[1, 0], [0, 1]]])
def test_coupling_rejects_degenerate_masks(mask):
    with pytest.raises(ValueError):
        AffineCoupling(mask)


@pytest.mark.parametrize("width", [2, 5])
def test_coupling_refuses_input_of_another_width_than_its_mask(width):
    # The book's layer is D=3; without the check extra columns were dropped silently.
    layer = AffineCoupling([1, 1, 0], hidden=8, depth=1)
    for direction in (layer, layer.inverse):
        with pytest.raises(ValueError, match=r"covers 3 features.*\(4, " + str(width) + r"\)"):
            direction(torch.randn(4, width))


def test_permutation_rejects_non_permutation():
    for not_one in (torch.tensor([0, 0, 1]), torch.tensor([[0, 1], [1, 0]]), torch.tensor(True), 0, True):
        with pytest.raises(ValueError):
            Permutation(not_one)


def test_permutation_of_a_number_of_features_is_a_seeded_random_order():
    # as nflows' RandomPermutation(features): Permutation(n) draws an order from torch's generator
    torch.manual_seed(3)
    first = Permutation(6)
    torch.manual_seed(3)
    assert torch.equal(Permutation(6).perm, first.perm) and sorted(first.perm.tolist()) == list(range(6))
    assert len({tuple(Permutation(6).perm.tolist()) for _ in range(20)}) > 1
    assert all(len(Permutation(n).perm) == 4 for n in (np.int64(4), torch.tensor(4)))  # any integer
    x = torch.randn(4, 6)
    assert torch.equal(first.inverse(first(x)[0])[0], x)


@pytest.mark.skipif(not native_bf16(), reason="bf16 runs only where this CPU multiplies it natively")
def test_bf16_coupling_runs_its_network_in_bf16_and_stays_exact():
    # The default on machines that multiply bf16 natively: the MLP runs under autocast, the affine
    # update in float32, so forward and inverse see the same s and t and the Jacobian stays triangular.
    torch.manual_seed(0)
    layer = AffineCoupling([1, 0, 1, 0], hidden=32, depth=2, mixed_precision=True, context_dim=2)
    for p in layer.parameters():
        p.data.normal_(0, 0.3)
    seen = []
    layer.conditioner.net[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    x, c = torch.randn(64, 4), torch.randn(64, 2)
    y, lad = layer(x, c)
    x_back, lad_back = layer.inverse(y, c)
    assert seen == [torch.bfloat16, torch.bfloat16] and y.dtype == lad.dtype == torch.float32
    assert (x_back - x).abs().max() < 1e-5 and (lad + lad_back).abs().max() < 1e-6
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, 4), c[:1])[0].flatten(), x[0])
    assert abs(torch.linalg.slogdet(jacobian)[1] - lad[0]) < 1e-4
    reference = AffineCoupling([1, 0, 1, 0], hidden=32, depth=2, mixed_precision=False, context_dim=2)
    reference.load_state_dict({**layer.state_dict(), "conditioner.bf16_network": torch.tensor(False)})
    y32, _ = reference(x, c)
    assert 0 < (y32 - y).abs().max() < 0.05  # the coarser network, not another map
    # evaluation (a loaded run, eval, density, sample): float32 throughout, the same on every machine
    seen.clear()
    y_eval, lad_eval = layer.eval()(x, c)
    assert seen == [torch.float32]
    assert torch.equal(y_eval, y32) and torch.equal(lad_eval, reference(x, c)[1])


def test_bf16_flow_density_integrates_to_one():
    from test_flow import grid_integral

    torch.manual_seed(1)
    flow = RealNVP(2, num_layers=4, hidden=16, depth=2, mixed_precision=True)
    for p in flow.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    assert abs(grid_integral(flow, (-10, 10), (-10, 10), 700) - 1) < 0.02


def test_bf16_is_skipped_for_float64_inputs():
    layer = AffineCoupling([1, 0], hidden=8, depth=1, mixed_precision=True).double()
    seen = []
    layer.conditioner.net[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    layer(torch.randn(3, 2, dtype=torch.float64))
    assert seen == [torch.float64]


def test_conditional_coupling_refuses_a_missing_or_misshapen_context():
    layer = AffineCoupling([1, 0], hidden=8, depth=1, context_dim=3)
    with pytest.raises(ValueError, match="needs a context"):
        layer(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"context of shape \(4, 3\)"):
        layer(torch.randn(4, 2), torch.randn(4, 2))


def test_coupling_weights_of_the_old_layout_load():
    # flowforge 0.1.0 kept the network as net.* and the mask buffers on the layer itself.
    layer = AffineCoupling([1, 0, 1], hidden=8, depth=1)
    for p in layer.parameters():
        p.data.normal_()
    old = {k.split(".", 1)[1]: v for k, v in layer.state_dict().items()}
    fresh = AffineCoupling([1, 0, 1], hidden=8, depth=1)
    fresh.load_state_dict(old)
    x = torch.randn(5, 3)
    assert torch.equal(fresh(x)[0], layer(x)[0])


def test_realnvp_masks_alternate():
    flow = RealNVP(4, num_layers=3, hidden=8, depth=1)
    masks = [layer.mask.long().tolist() for layer in flow.transform.transforms]
    assert masks == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]


def test_realnvp_rejects_mask_of_wrong_length():
    with pytest.raises(ValueError):
        RealNVP(3, mask=[1, 0])


def test_fit_standardization_sets_the_data_and_context_statistics_for_a_users_own_loop():
    from flowforge.models import NSF
    from flowforge.transforms import Standardize, StandardizeContext, fit_standardization

    x = torch.randn(500, 2, dtype=torch.float64) * torch.tensor([100.0, 0.1]) + torch.tensor([500.0, -3.0])
    c = torch.rand(500, 1, dtype=torch.float64) * 20 + 2000
    flow = NSF(2, num_layers=1, hidden=8, context_dim=1, standardize=True)
    fit_standardization(flow, x, context=c)
    first = next(m for m in flow.modules() if isinstance(m, Standardize))
    assert torch.allclose(first.mean.double(), x.mean(0), atol=1e-3) and torch.allclose(first.std.double(), x.std(0, unbiased=False), rtol=1e-5)
    assert isinstance(flow.context_embedding, StandardizeContext)
    unit = flow.context_embedding(c.float())
    assert abs(float(unit.mean())) < 1e-3 and abs(float(unit.std(unbiased=False)) - 1) < 1e-3
    saved = {k: v.clone() for k, v in flow.state_dict().items()}  # weights of the user's loop, loaded afresh
    again = NSF(2, num_layers=1, hidden=8, context_dim=1, standardize=True)
    again.load_state_dict(saved)
    with torch.no_grad():
        assert torch.allclose(again.log_prob(x.float(), c.float()), flow.log_prob(x.float(), c.float()))
    with pytest.raises(ValueError, match="context is constant"):
        fit_standardization(flow, x, context=torch.full((500, 1), 3.0))
    with pytest.raises(ValueError, match=r"\(N, C\) = \(500, C\).*got shape \(500,\)"):
        fit_standardization(flow, x, context=c[:, 0])  # 1-D: one condition per row, or 500 of one row?
    with pytest.raises(ValueError, match="reads 1 context values per row, the context has 2"):
        fit_standardization(NSF(2, num_layers=1, hidden=8, context_dim=1), x, context=c.repeat(1, 2))
    flow.context_embedding = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="context_embedding is a Linear, not a StandardizeContext"):
        fit_standardization(flow, x, context=c)


def test_a_standardize_layer_never_set_is_warned_of_at_the_first_training_batch_of_raw_data():
    # NSF(5, standardize=True) trained on raw data in a loop of one's own reached NLL 648,462 (29.6 with
    # fit_standardization), with nothing said: the flag looks as if it standardised by itself
    import warnings

    from flowforge.errors import FlowforgeWarning
    from flowforge.models import NSF
    from flowforge.transforms import fit_standardization

    x = torch.randn(200, 5) * 100 + 500
    flow = NSF(5, num_layers=1, hidden=8, standardize=True)
    with pytest.warns(FlowforgeWarning, match="Standardize layer still has mean 0 and std 1.*fit_standardization"):
        flow.log_prob(x[:100])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.log_prob(x[100:])  # once
        fitted = NSF(5, num_layers=1, hidden=8, standardize=True)
        fit_standardization(fitted, x)
        fitted.log_prob(x)  # set: nothing to say
        NSF(5, num_layers=1, hidden=8, standardize=True).log_prob(torch.randn(100, 5))  # already unit scale
        NSF(5, num_layers=1, hidden=8, standardize=True).eval().log_prob(x)  # scoring, not training


@pytest.mark.parametrize("build, rows, context, words", [
    (dict(standardize=True), "nan", None, "row 7 of the training data holds NaN"),
    (dict(), "x", None, "no Standardize layer to set; build it with standardize=True"),
    (dict(standardize=True), "wide", None, r"\(N, D\) = \(N, 2\); got shape \(50, 3\)"),
    (dict(standardize=True), "x", "c", "unconditional \\(context_dim=0\\): it takes no context"),
], ids=["nan row", "no layer", "wrong width", "context for an unconditional flow"])
def test_fit_standardization_refuses_what_it_would_set_silently_wrong(build, rows, context, words):
    from flowforge.models import NSF
    from flowforge.transforms import fit_standardization

    x = torch.randn(50, 2)
    data = {"x": x, "nan": x.clone().index_fill_(0, torch.tensor([7]), math.nan), "wide": torch.randn(50, 3)}[rows]
    flow = NSF(2, num_layers=1, hidden=8, **build)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(ValueError, match=words):
        fit_standardization(flow, data, context=None if context is None else torch.randn(50, 1))
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items()) and flow.context_embedding is None


def test_reported_figures_are_computed_in_evaluation_mode():
    # bf16 networks speed up training steps only: the evaluator and the variational diagnostics score
    # a flow still in training mode in float32 (the same on every machine), and leave it training.
    from flowforge.training.evaluate import log_prob
    from flowforge.variational.diagnostics import log_weights

    torch.manual_seed(0)
    flow = RealNVP(4, num_layers=4, hidden=32, depth=2, mixed_precision=True)
    for p in flow.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    exact = RealNVP(4, num_layers=4, hidden=32, depth=2, mixed_precision=False)
    exact.load_state_dict({k: (torch.tensor(False) if k.endswith("bf16_network") else v)
                           for k, v in flow.state_dict().items()})
    x = torch.randn(256, 4)
    with torch.no_grad():
        assert torch.equal(log_prob(flow, x), exact.log_prob(x)) and flow.training
        target = torch.distributions.Normal(0.0, 1.0)

        def standard_normal(v):
            return target.log_prob(v).sum(-1)

        ours, theirs = (log_weights(f, standard_normal, 512, generator=torch.Generator().manual_seed(0))
                        for f in (flow, exact))
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1]) and flow.training
    if native_bf16():  # where bf16 runs, training mode does differ: the test above compares something
        with torch.no_grad():
            assert not torch.equal(flow.log_prob(x), exact.log_prob(x))


def test_evaluation_mode_restores_each_submodules_own_mode():
    from flowforge.nets import evaluation_mode

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    net[1].eval()  # frozen by its user
    with evaluation_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training
