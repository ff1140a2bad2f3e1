"""Flow and base distributions: the change of variables, sampling, reparameterised gradients,
the torch.distributions view, batch shapes, other bases, densities that integrate to 1."""

import math
import re
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

from flowforge.distributions import (ConditionalDiagonalNormal, DiagonalNormal, DistributionBase, Flow,
                                     StandardNormal)
from flowforge.models import FFJORD, Glow, RealNVP
from flowforge.plots import density_grid
from flowforge.training import load_run
from flowforge.transforms import AffineCoupling, Compose


def perturbed(flow, seed=None, scale=0.3):
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def perturbed_flow(dim=2, seed=0, context_dim=0) -> Flow:
    torch.manual_seed(seed)
    return perturbed(RealNVP(dim, num_layers=4, hidden=16, depth=2, context_dim=context_dim,
                             mixed_precision=False))


def grid_integral(flow, xlim, ylim, resolution) -> float:
    xs, ys, logp = density_grid(flow, xlim, ylim, resolution)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    return float(np.exp(logp.astype(np.float64)).sum() * cell)


# ---- bases ---------------------------------------------------------------------------------------

def test_standard_normal_matches_torch_distributions():
    base = StandardNormal(3)
    z = torch.randn(7, 3)
    assert torch.allclose(base.log_prob(z), base.distribution().log_prob(z), atol=1e-5)


def test_standard_normal_image_shape_and_temperature():
    base = StandardNormal((2, 4, 4))
    z = base.sample(1000, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1000, 2, 4, 4)
    assert abs(z.std().item() - 0.5) < 0.02
    assert base.log_prob(z).shape == (1000,)


@pytest.mark.parametrize("make", [lambda: DiagonalNormal(3), lambda: ConditionalDiagonalNormal(3, context_dim=2)])
def test_gaussian_bases_match_torch_distributions(make):
    base = perturbed(make())
    context = torch.randn(6, 2) if base.context_dim else None
    z = torch.randn(6, 3)
    assert torch.allclose(base.log_prob(z, context), base.distribution(context).log_prob(z), atol=1e-5)
    draws = base.sample(6, context, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (6, 3) and not draws.requires_grad


def test_distribution_base_reads_batch_dimensions_as_event():
    base = DistributionBase(torch.distributions.StudentT(3.0, torch.zeros(2), torch.ones(2)))
    z = torch.randn(4, 2)
    expected = torch.distributions.StudentT(3.0, 0.0, 1.0).log_prob(z).sum(1)
    assert base.event_shape == (2,) and torch.allclose(base.log_prob(z), expected)
    a = base.sample(5, generator=torch.Generator().manual_seed(1))
    b = base.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        base.sample(5, temperature=0.5)


# ---- the change of variables ------------------------------------------------------------------------

def test_log_prob_is_change_of_variables():
    flow = perturbed_flow()
    x = torch.randn(10, 2)
    z, lad = flow(x)
    assert torch.allclose(flow.log_prob(x), flow.base.log_prob(z) + lad)


@pytest.mark.parametrize("context_dim", [0, 3])
def test_sample_and_log_prob_agree_with_log_prob(context_dim):
    flow = perturbed_flow(context_dim=context_dim).double()
    context = torch.randn(50, context_dim, dtype=torch.float64) if context_dim else None
    x, lp = flow.sample_and_log_prob(() if context_dim else 50, context=context,
                                     generator=torch.Generator().manual_seed(0))
    assert x.shape == (50, 2) and torch.allclose(lp, flow.log_prob(x, context), atol=1e-9)


def test_sampling_is_repeatable_with_a_generator():
    flow = perturbed_flow()
    a = flow.sample(20, generator=torch.Generator().manual_seed(5))
    b = flow.sample(20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (20, 2)


def test_inverse_maps_latent_to_data():
    flow = perturbed_flow().double()
    z = torch.randn(8, 2, dtype=torch.float64)
    x, _ = flow.inverse(z)
    assert torch.allclose(flow(x)[0], z, atol=1e-10)


# ---- batch shapes, as torch.distributions has them ---------------------------------------------

def test_any_batch_shape_is_flattened_and_restored():
    flow = perturbed_flow()
    x = torch.randn(3, 4, 2)
    assert torch.equal(flow.log_prob(x), flow.log_prob(x.reshape(12, 2)).reshape(3, 4))
    assert flow.log_prob(x[0, 0]).shape == ()
    assert flow.sample((2, 3)).shape == (2, 3, 2) and flow.sample().shape == (2,)
    z, lad = flow(x)
    assert z.shape == (3, 4, 2) and lad.shape == (3, 4)


def test_context_batch_shape_broadcasts():
    flow = perturbed_flow(context_dim=3)
    context = torch.randn(5, 3)
    x = flow.sample((4,), context=context)
    assert x.shape == (4, 5, 2)
    log_p = flow.log_prob(x, context=context)  # x (4, 5, 2) against context (5, 3)
    assert log_p.shape == (4, 5)
    assert torch.allclose(log_p[:, 1], flow.log_prob(x[:, 1], context=context[1:2].expand(4, 3)), atol=1e-5)
    assert flow.sample(context=context[0]).shape == (2,)  # one condition, one draw


def test_empty_batches_give_empty_results():
    flow = perturbed_flow()
    assert flow.log_prob(torch.empty(0, 2)).shape == (0,)
    assert flow.sample(0).shape == (0, 2)
    glow = Glow((1, 4, 4), levels=1, steps=1, hidden=4)
    assert glow.log_prob(torch.empty(0, 1, 4, 4)).shape == (0,)


def test_wrong_shape_and_dtype_are_refused_in_plain_words():
    flow = perturbed_flow()
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        flow.log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match="computes in torch.float32 but the data are torch.float64"):
        flow.log_prob(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature"):
        flow.sample(3, temperature=float("nan"))
    with pytest.raises(ValueError, match="negative"):
        flow.sample(-1)


EXTREMES = [0.0, 1e-45, -1e-45, 1e-38, 1.0, -3.0, 1e10, -1e20, 1e30, 1e38, -1e38, 3.4e38]


@pytest.mark.parametrize("build, context_dim", [
    (lambda: perturbed_flow(), 0),
    (lambda: perturbed(FFJORD(2, hidden=8, depth=1, solver="rk4", solver_steps=4)), 0),
    (lambda: perturbed_flow(context_dim=2), 2),
], ids=["realnvp", "ffjord", "conditional-realnvp"])
def test_log_prob_is_never_nan_for_finite_input(build, context_dim):
    flow = build().eval()
    grid = torch.tensor([[a, b] for a in EXTREMES for b in EXTREMES], dtype=torch.float32)
    context = torch.zeros(len(grid), context_dim) if context_dim else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow warnings are allowed, not required
        log_p = flow.log_prob(grid, context)
    assert not torch.isnan(log_p).any()
    assert torch.isfinite(log_p[:4]).all()  # ordinary points stay finite


# ---- reparameterised samples ------------------------------------------------------------------------

@pytest.mark.parametrize("context_dim", [0, 2])
def test_rsample_gradient_matches_finite_differences(context_dim):
    # E[g(x)] estimated through rsample with fixed base noise is a smooth function of the
    # parameters; its autograd gradient must equal central finite differences along a random direction.
    torch.manual_seed(0)
    smooth = {"hidden": 8, "depth": 1, "activation": "tanh"}  # no ReLU kink inside the difference quotient
    transform = Compose([AffineCoupling([1, 0], context_dim=context_dim, **smooth),
                         AffineCoupling([0, 1], context_dim=context_dim, **smooth)])
    base = ConditionalDiagonalNormal(2, context_dim, **smooth) if context_dim else DiagonalNormal(2)
    flow = perturbed(Flow(transform, base)).double()
    context = torch.randn(64, context_dim, dtype=torch.float64) if context_dim else None
    shape = () if context_dim else (64,)

    def expectation():
        x = flow.rsample(shape, context=context, generator=torch.Generator().manual_seed(3))
        return torch.sin(x).sum(-1).add(x.pow(2).sum(-1)).mean()

    params = list(flow.parameters())
    grads = torch.autograd.grad(expectation(), params)
    direction = [torch.randn_like(p) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    h = 1e-5
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(h * d)
        up = expectation()
        for p, d in zip(params, direction):
            p.sub_(2 * h * d)
        down = expectation()
    numeric = (up - down) / (2 * h)
    assert abs(analytic - numeric) < 1e-6 * (1 + abs(numeric))
    assert abs(analytic) > 1e-3  # the gradient is not trivially zero


def test_sample_carries_no_graph_and_rsample_does():
    flow = Flow(Compose([AffineCoupling([1, 0], hidden=8, depth=1)]), DiagonalNormal(2))
    assert flow.sample(4).grad_fn is None and not flow.sample(4).requires_grad
    assert flow.rsample(4).requires_grad
    x, log_p = flow.sample_and_log_prob(4)
    assert not x.requires_grad and not log_p.requires_grad


# ---- the torch.distributions view -------------------------------------------------------------------

def test_distribution_is_a_torch_distribution_that_agrees_with_the_flow():
    flow = perturbed_flow()
    d = flow.distribution()
    assert isinstance(d, torch.distributions.Distribution) and d.has_rsample
    assert d.batch_shape == () and d.event_shape == (2,)
    x = torch.randn(7, 2)
    assert torch.equal(d.log_prob(x), flow.log_prob(x))
    torch.manual_seed(4)
    a = d.sample((3,))
    torch.manual_seed(4)
    assert torch.equal(a, flow.sample((3,)))
    assert d.rsample((3,)).requires_grad and not a.requires_grad


def test_conditional_distribution_has_the_context_batch_shape():
    flow = perturbed_flow(context_dim=3)
    context = torch.randn(5, 3)
    d = flow.distribution(context)
    assert d.batch_shape == (5,) and d.event_shape == (2,)
    x = d.sample((4,))
    assert x.shape == (4, 5, 2)
    assert torch.allclose(d.log_prob(x), flow.log_prob(x, context=context))
    assert d.rsample().shape == (5, 2)
    independent = torch.distributions.Independent(d, 1)  # a torch.distributions utility accepts it
    assert independent.log_prob(x).shape == (4,)


def test_an_expanded_distribution_scores_one_value_per_batch_entry_as_torch_distributions_do():
    d = perturbed_flow().distribution().expand((4,))
    normal = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(4, 2), 1.0), 1)  # batch (4,)
    for value in (torch.zeros(2), torch.zeros(3, 1, 2), torch.zeros(3, 4, 2)):
        assert d.log_prob(value).shape == normal.log_prob(value).shape
    with pytest.raises(ValueError, match=r"batch shape \(5,\) do not broadcast against .* \(4,\)"):
        d.log_prob(torch.zeros(5, 2))
    conditional = perturbed_flow(context_dim=3).distribution(torch.randn(5, 3))
    assert conditional.expand((2, 5)).batch_shape == (2, 5)
    with pytest.raises(ValueError, match=r"cannot expand a batch of shape \(5,\) to \(4,\)"):
        conditional.expand((4,))


@pytest.mark.parametrize("context, words", [
    (None, "conditional .* give a context"), ([0.1, 0.2, 0.3], "must be a tensor"),
    (torch.randn(5, 2), "a context of 3 values, got 2"), (torch.full((1, 3), math.nan), "NaN"),
], ids=["missing", "a list", "wrong width", "NaN"])
def test_a_distribution_refuses_a_bad_context_when_it_is_made(context, words):
    with pytest.raises(ValueError, match=words):
        perturbed_flow(context_dim=3).distribution(context)


# ---- other bases train, and every density integrates to 1 ---------------------------------------

def _moons(n=2000, seed=0) -> torch.Tensor:
    x, _ = make_moons(n, noise=0.05, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return torch.as_tensor(x, dtype=torch.float32)


def _fit(flow, data, steps=300):
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        batch = data[torch.randint(len(data), (256,), generator=generator)]
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("base", [
    lambda: DiagonalNormal(2),
    lambda: torch.distributions.StudentT(4.0, torch.zeros(2), torch.ones(2)),
], ids=["learned-diagonal-normal", "student-t"])
def test_flow_with_another_base_trains_and_integrates_to_one(base):
    torch.manual_seed(0)
    layers = [AffineCoupling([1, 0] if i % 2 == 0 else [0, 1], hidden=32, depth=2) for i in range(6)]
    flow = Flow(Compose(layers), base())
    losses = _fit(flow, _moons())
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.5  # it learned
    flow.eval()
    assert abs(grid_integral(flow, (-12, 12), (-12, 12), 800) - 1) < 0.02


def test_untrained_flow_density_integrates_to_one():
    assert abs(grid_integral(perturbed_flow(), (-7, 7), (-7, 7), 500) - 1) < 0.02


def test_trained_flow_density_integrates_to_one(trained_run):
    flow, _, _ = load_run(trained_run)
    # Moons span [-1, 2] × [-0.5, 1]; the grid reaches well past the data on every side.
    total = grid_integral(flow, (-3.0, 4.0), (-2.5, 3.0), 800)
    assert abs(total - 1) < 0.02, total


# ---- notebooks ------------------------------------------------------------------------------------------

def test_importing_the_plots_leaves_the_matplotlib_backend_alone():
    code = ("import matplotlib; before = dict.__getitem__(matplotlib.rcParams, 'backend'); "
            "import flowforge.plots, flowforge.cli; "
            "assert dict.__getitem__(matplotlib.rcParams, 'backend') == before, 'changed'; "
            "matplotlib.use('svg'); import importlib; importlib.reload(flowforge.plots); "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "ok", result.stderr


# ---- contexts refused or accepted in the flow's words -------------------------------------------

def test_a_context_is_required_exactly_when_the_flow_is_conditional():
    plain, conditional = perturbed_flow(), perturbed_flow(context_dim=3)
    x = torch.randn(6, 2)
    with pytest.raises(ValueError, match="unconditional"):
        plain.log_prob(x, torch.randn(6, 3))
    with pytest.raises(ValueError, match="conditional .context_dim=3.: give a context"):
        conditional.sample(4)
    with pytest.raises(ValueError, match="context of 3 values, got 2"):
        conditional.log_prob(x, torch.randn(6, 2))
    with pytest.raises(ValueError, match="does not broadcast"):
        conditional.log_prob(torch.randn(5, 2), torch.randn(6, 3))
    with pytest.raises(ValueError, match="by keyword"):
        conditional.sample(4, 0.7)  # the old positional temperature
    # a 0-d tensor was told it was no tensor and to pass temperature by keyword; (10,) got no hint
    one = perturbed_flow(context_dim=1)
    with pytest.raises(ValueError, match=r"not a 0-d tensor: give torch.tensor\(\[0.7\]\)"):
        one.sample(4, context=torch.tensor(0.7))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\), not a 0-d tensor$"):
        conditional.sample(4, context=torch.tensor(0.7))
    with pytest.raises(ValueError, match="unconditional"):
        plain.sample(4, context=torch.tensor(0.7))
    for labels in (torch.randn(6), torch.arange(6)):
        with pytest.raises(ValueError, match=r"got 6; 6 conditions of one value each are context.unsqueeze\(-1\)"):
            one.log_prob(x, labels)


def test_empty_batches_with_a_context():
    flow = perturbed_flow(context_dim=3)
    assert flow.log_prob(torch.empty(0, 2), torch.empty(0, 3)).shape == (0,)
    assert flow.sample(0, context=torch.randn(2, 3)).shape == (0, 2, 2)


@pytest.mark.parametrize("bad", [2.0, True, (2, -1), "3", torch.tensor(2.0)])
def test_malformed_sample_shapes_are_refused(bad):
    with pytest.raises(ValueError, match="sample shape|negative"):
        perturbed_flow().sample(bad)


def test_an_integer_tensor_is_a_sample_count():
    assert perturbed_flow().sample(torch.tensor(3)).shape == (3, 2)


def test_conditional_realnvp_learns_which_moon():
    x, label = make_moons(3000, noise=0.05, random_state=0)
    x, context = torch.as_tensor(x, dtype=torch.float32), torch.nn.functional.one_hot(torch.as_tensor(label)).float()
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=6, hidden=64, depth=2, context_dim=2, mixed_precision=False)
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(300):
        rows = torch.randint(len(x), (256,))
        loss = -flow.log_prob(x[rows], context[rows]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    centres = torch.stack([x[label == k].mean(0) for k in (0, 1)])
    for k in (0, 1):
        draws = flow.sample((500,), context=torch.eye(2)[k])
        nearest = torch.cdist(draws, x).argmin(1)
        assert (torch.as_tensor(label)[nearest] == k).float().mean() > 0.9
        assert (draws.mean(0) - centres[k]).norm() < 0.2


# ---- other bases move with the flow; Pyro takes the distribution ----------------------------------

def test_a_torch_distribution_base_moves_and_trains_with_the_flow():
    df = torch.nn.Parameter(torch.tensor(4.0))
    flow = Flow(Compose([AffineCoupling([1, 0], hidden=8, depth=1)]),
                torch.distributions.StudentT(df, torch.zeros(2), torch.ones(2))).double()
    learned = dict(flow.named_parameters())["base.df"]  # the learnable argument is the flow's own now
    assert "base.loc" in flow.state_dict() and "base.loc" not in dict(flow.named_parameters())
    x = flow.sample(5)
    assert x.dtype == torch.float64 and flow.log_prob(x).dtype == torch.float64
    flow.log_prob(torch.randn(8, 2, dtype=torch.float64)).sum().backward()
    assert learned.grad is not None and torch.isfinite(learned.grad).all()


def test_pyro_samples_and_scores_the_flow_inside_a_plate():
    import pyro

    flow = perturbed_flow()

    def model():  # Pyro broadcasts only its own distributions over a plate: expand says the batch
        with pyro.plate("data", 5):
            return pyro.sample("x", flow.distribution().expand([5]))

    trace = pyro.poutine.trace(model).get_trace()
    x = trace.nodes["x"]["value"]
    assert x.shape == (5, 2)
    assert torch.allclose(trace.log_prob_sum(), flow.log_prob(x).sum())
    conditioned = pyro.poutine.condition(model, data={"x": torch.zeros(5, 2)})
    assert torch.allclose(pyro.poutine.trace(conditioned).get_trace().log_prob_sum(),
                          flow.log_prob(torch.zeros(5, 2)).sum())
    single = pyro.poutine.trace(lambda: pyro.sample("y", flow.distribution())).get_trace()
    assert single.nodes["y"]["value"].shape == (2,)


@pytest.mark.parametrize("name", ["RealNVP", "NSF", "MAF", "FFJORD"])
def test_a_flow_pickles_whole_as_torch_save_does(name):
    """torch.save(flow) / pickle: a coupling's load hook is a method, not a lambda (which cannot pickle)."""
    import io

    from flowforge import models

    flow, x = getattr(models, name)(2), torch.randn(5, 2)
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.allclose(again.log_prob(x), flow.log_prob(x))


@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("name, options", [("RealNVP", {}), ("NSF", {}), ("NSF", {"autoregressive": True}),
                                           ("MAF", {}), ("FFJORD", {})])
def test_every_flow_saves_and_loads_with_safetensors_save_model(tmp_path, name, options, context_dim):
    """safetensors' save_model refuses tensors that share storage: a conditional MAF's degrees were a
    view of a longer tensor, and save_model raised for every conditional MAF and autoregressive NSF."""
    from safetensors.torch import load_model, save_model

    from flowforge import models

    options = {**options, **({"context_dim": context_dim} if context_dim else {})}
    torch.manual_seed(0)
    flow = getattr(models, name)(3, **options)
    torch.manual_seed(1)
    twin = getattr(models, name)(3, **options)
    save_model(flow, str(tmp_path / "flow.safetensors"))
    load_model(twin, str(tmp_path / "flow.safetensors"))
    x, c = torch.randn(4, 3), (torch.randn(4, context_dim) if context_dim else None)
    with torch.no_grad():
        assert torch.equal(twin.log_prob(x, context=c), flow.log_prob(x, context=c))


@pytest.mark.parametrize("name, options, words", [
    ("NSF", {"context_dim": -1}, "context_dim must be a whole number >= 0, got -1"),
    ("RealNVP", {"context_dim": True}, "context_dim must be a whole number >= 0, got True"),
    ("RealNVP", {"hidden": 2.5}, "hidden must be a whole number >= 1, got 2.5"),
    ("MAF", {"context_dim": -2}, "context_dim must be a whole number >= 0, got -2"),
    ("NSF", {"autoregressive": True, "depth": 0}, "depth must be a whole number >= 1, got 0"),
    ("FFJORD", {"hidden": 8.0}, "hidden must be a whole number >= 1, got 8.0"),
])
def test_a_bad_network_size_is_refused_when_the_flow_is_built(name, options, words):
    # context_dim=-1 built a network of Linear(in_features=0) and failed later; hidden=2.5 deep inside torch
    from flowforge import models

    with pytest.raises(ValueError, match=re.escape(words)):
        getattr(models, name)(3, **options)


def test_network_sizes_of_any_integer_type_are_taken():
    # the size checks must not refuse what built before: numpy integers, 0-d integer tensors
    from flowforge.models import MAF, RealNVP

    flow = MAF(3, hidden=torch.tensor(8), context_dim=torch.tensor(2))
    assert flow.context_dim == 2 and flow.log_prob(torch.randn(4, 3), context=torch.randn(4, 2)).shape == (4,)
    assert RealNVP(3, hidden=np.int64(8), context_dim=np.int32(1)).context_dim == 1
