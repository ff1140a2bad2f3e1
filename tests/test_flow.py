"""Flow and base distribution: the change of variables, sampling, densities that integrate to 1."""

import numpy as np
import torch

from flowforge.distributions import Flow, StandardNormal
from flowforge.models import RealNVP
from flowforge.plots import density_grid
from flowforge.training import load_run


def perturbed_flow(dim=2, seed=0) -> Flow:
    torch.manual_seed(seed)
    flow = RealNVP(dim, num_layers=4, hidden=16, depth=2)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


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


def test_log_prob_is_change_of_variables():
    flow = perturbed_flow()
    x = torch.randn(10, 2)
    z, lad = flow(x)
    assert torch.allclose(flow.log_prob(x), flow.base.log_prob(z) + lad)


def test_sample_and_log_prob_agree_with_log_prob():
    flow = perturbed_flow().double()
    x, lp = flow.sample_and_log_prob(50, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lp, flow.log_prob(x), atol=1e-9)


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


def _grid_integral(flow, xlim, ylim, resolution) -> float:
    xs, ys, logp = density_grid(flow, xlim, ylim, resolution)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    return float(np.exp(logp.astype(np.float64)).sum() * cell)


def test_untrained_flow_density_integrates_to_one():
    assert abs(_grid_integral(perturbed_flow(), (-7, 7), (-7, 7), 500) - 1) < 0.02


def test_trained_flow_density_integrates_to_one(trained_run):
    flow, _, _ = load_run(trained_run)
    # Moons span [-1, 2] × [-0.5, 1]; the grid reaches well past the data on every side.
    total = _grid_integral(flow, (-3.0, 4.0), (-2.5, 3.0), 800)
    assert abs(total - 1) < 0.02, total
