"""Variational inference: targets and their log Z, the objectives' gradients, the importance-sampling
diagnostics, fitting, and the `flowforge fit` command with bad targets."""

from __future__ import annotations

import json
import shutil
import math
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import genpareto

from cli_harness import assert_one_line, cli, file_hashes
from flowforge.distributions import DiagonalNormal, Flow, StandardNormal
from flowforge.errors import FlowforgeError, FlowforgeWarning
from flowforge.models import NSF
from flowforge.transforms import Standardize
from flowforge.variational import fit, importance_summary, load_target, log_weights, place_on_target, resample
from flowforge.variational.fitting import set_target_scale
from flowforge.variational.diagnostics import diagnose, generalized_pareto_shape, mode_coverage, pareto_k
from flowforge.variational.base import StudentTBase, StudentTMixtureBase
from flowforge.variational.fitting import student_t_base
from flowforge.variational.objectives import (JEFFREYS_WARM_FRACTION, WARM_FRACTION, forward_kl, jeffreys,
                                              objective_function, reverse_kl, sticking_the_landing)
from flowforge.variational.targets import BUILT_IN, Target, built_in_target

FAST = ["--steps", "30", "--layers", "2", "--hidden", "16", "--no-progress", "--no-plots"]


def gaussian_target(loc: torch.Tensor, scale: torch.Tensor, log_c: float) -> Target:
    """p̃ = e^{log_c} N(loc, diag scale²): log Z = log_c."""
    def log_prob(x):
        return log_c + torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)
    return Target("gaussian", len(loc), log_prob, log_c)


def affine_flow(loc: torch.Tensor, scale: torch.Tensor) -> Flow:
    """x = loc + scale · z: N(loc, diag scale²) exactly (an affine flow: Standardize's fixed map)."""
    layer = Standardize(len(loc))
    layer.set_statistics(loc, scale)
    return Flow(layer, StandardNormal(len(loc)))


@pytest.mark.parametrize("seed", range(3))
def test_log_z_of_a_flow_that_equals_the_target_is_exact_with_ess_one(seed):
    gen = torch.Generator().manual_seed(seed)
    dim = 1 + seed * 2
    loc, scale = torch.randn(dim, generator=gen) * 3, torch.rand(dim, generator=gen) * 2 + 0.1
    log_c = float(torch.randn((), generator=gen) * 5)
    summary = diagnose(affine_flow(loc, scale), gaussian_target(loc, scale, log_c), 4000, generator=gen)
    assert summary["log_z"] == pytest.approx(log_c, abs=1e-4)
    assert summary["elbo"] == pytest.approx(log_c, abs=1e-4) and abs(summary["kl"]) < 1e-4
    assert summary["ess_per_draw"] > 0.9999 and summary["log_z_stderr"] < 1e-4


def test_log_z_estimate_of_a_wrong_flow_is_below_and_ess_below_one():
    loc, scale = torch.zeros(2), torch.ones(2)
    summary = diagnose(affine_flow(loc + 0.5, scale * 0.7), gaussian_target(loc, scale, 1.0), 20_000,
                       generator=torch.Generator().manual_seed(0))
    assert summary["elbo"] < 1.0 - 0.1 and summary["ess_per_draw"] < 0.9
    assert abs(summary["log_z"] - 1.0) < 3 * summary["log_z_stderr"] + 1e-3


def test_a_flow_on_one_of_two_known_modes_is_warned_of_though_its_weights_look_perfect():
    # q on one of two equal modes: ESS near 1, k-hat low, log Z log 2 short: fit and eval said nothing
    from flowforge.variational.diagnostics import warn_if_unreliable

    modes = torch.tensor([[-6.0, 0.0], [6.0, 0.0]])

    def two_modes(x):
        return torch.logsumexp(torch.distributions.Normal(modes, 1.0).log_prob(x[:, None, :]).sum(-1), 1) - math.log(2)

    flow, gen = affine_flow(modes[1], torch.full((2,), 1.2)), torch.Generator().manual_seed(0)  # wider than the mode
    summary = diagnose(flow, Target("two modes", 2, two_modes, log_z=0.0, modes=modes), 4000, generator=gen)
    assert summary["ess_per_draw"] > 0.9 and summary["pareto_k"] < 0.7 and summary["modes_covered"] == 0.5
    with pytest.warns(FlowforgeWarning, match="q covers 50% of the target's modes"):
        warn_if_unreliable(summary)
    unmarked = diagnose(flow, Target("two modes", 2, two_modes, log_z=0.0), 4000, generator=gen)
    with pytest.warns(FlowforgeWarning, match=r"log Z estimate -0.69\d\d lies \d+ standard errors from the target's 0.0000"):
        warn_if_unreliable(unmarked)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unreliable({**summary, "modes_covered": 1.0, "true_log_z": summary["log_z"]})  # nothing missed


def _grid_log_z(target: Target, lows, highs, n: int = 1500) -> float:
    xs = [torch.linspace(lo, hi, n, dtype=torch.float64) for lo, hi in zip(lows, highs)]
    xx, yy = torch.meshgrid(*xs, indexing="ij")
    cell = math.log(float((xs[0][1] - xs[0][0]) * (xs[1][1] - xs[1][0])))
    return float(torch.logsumexp(target(torch.stack([xx, yy], -1).reshape(-1, 2)), 0)) + cell


@pytest.mark.parametrize("name, lows, highs", [
    ("gmm", (-8, -8), (8, 8)), ("moons", (-4, -4), (4, 4)), ("ring", (-3, -3), (3, 3)),
    ("banana", (-7, -4), (7, 52)), ("double-well", (-4, -7), (4, 7))])
def test_each_two_d_target_log_z_matches_a_cartesian_grid(name, lows, highs):
    target = built_in_target(name, 2)
    assert target.dim == 2 and target.log_z is not None
    assert _grid_log_z(target, lows, highs, 2500 if name == "banana" else 1500) == pytest.approx(target.log_z,
                                                                                                  abs=2e-3)


def test_the_funnel_is_normalised():
    """∫∫ p(v, x) dx dv with x = e^{v/2} u (so the grid resolves the neck): 1."""
    target = built_in_target("funnel", 2)
    v, u = torch.meshgrid(torch.linspace(-20, 20, 1500, dtype=torch.float64),
                          torch.linspace(-9, 9, 1500, dtype=torch.float64), indexing="ij")
    points = torch.stack([v, torch.exp(v / 2) * u], -1).reshape(-1, 2)
    log_cell = math.log((40 / 1499) * (18 / 1499))
    total = torch.logsumexp(target(points) + (v / 2).reshape(-1), 0) + log_cell
    assert float(total) == pytest.approx(target.log_z, abs=1e-4)


def test_every_built_in_target_takes_a_batch_and_returns_one_finite_value_per_row():
    for name in BUILT_IN:
        target = built_in_target(name)
        values = target(torch.randn(7, target.dim))
        assert values.shape == (7,) and torch.isfinite(values).all(), name


def _gradients(loss_fn, flow, target, n, batches, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batches):
        flow.zero_grad()
        loss_fn(flow, target, n, generator=gen).backward()
        rows.append(torch.cat([p.grad.flatten() for p in flow.parameters()]))
    return torch.stack(rows)


def test_path_gradient_agrees_with_reverse_kl_in_expectation_and_has_lower_variance_near_the_optimum():
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
    target = gaussian_target(loc, scale, 0.3)
    flow = Flow(Standardize(2), DiagonalNormal(2))   # learnable loc and scale: can equal the target
    with torch.no_grad():  # away from the optimum: the two estimators' means must agree
        flow.base.loc.copy_(loc + 0.4)
        flow.base.log_scale.copy_(scale.log() - 0.3)
    plain, path = (_gradients(f, flow, target, 64, 300) for f in (reverse_kl, sticking_the_landing))
    stderr = torch.sqrt(plain.var(0) / len(plain) + path.var(0) / len(path))
    assert ((plain.mean(0) - path.mean(0)).abs() < 4 * stderr + 1e-6).all()
    with torch.no_grad():  # near the optimum: the path form's variance collapses
        flow.base.loc.copy_(loc + 0.01)
        flow.base.log_scale.copy_(scale.log())
    plain, path = (_gradients(f, flow, target, 64, 100) for f in (reverse_kl, sticking_the_landing))
    assert path.var(0).sum() < 0.1 * plain.var(0).sum()


def test_forward_kl_gradient_moves_a_too_narrow_flow_wider():
    target = gaussian_target(torch.zeros(2), torch.ones(2) * 2, 0.0)
    flow = Flow(Standardize(2), DiagonalNormal(2))
    grads = _gradients(forward_kl, flow, target, 4096, 5)
    log_scale_grad = grads[:, 2:].mean(0)  # parameters: loc (2), log_scale (2)
    assert (log_scale_grad < 0).all()  # descending it raises the scale


def test_the_recipe_objective_is_forward_kl_for_its_first_quarter_then_the_path_gradient():
    steps = 1000
    chosen = [objective_function("forward-then-stl", step, steps) for step in range(steps)]
    assert chosen.count(forward_kl) == int(WARM_FRACTION * steps) and chosen[-1] is sticking_the_landing
    assert chosen == sorted(chosen, key=lambda f: f is sticking_the_landing)


def test_forward_then_jeffreys_warms_up_by_forward_kl_then_alternates_reverse_and_forward_steps():
    steps = 1000
    chosen = [objective_function("forward-then-jeffreys", step, steps) for step in range(steps)]
    warm = int(JEFFREYS_WARM_FRACTION * steps)
    assert set(chosen[:warm]) == {forward_kl}
    assert chosen[warm:] == [forward_kl if step % 2 == 0 else reverse_kl for step in range(warm, steps)]
    # with a time budget the phase follows the clock's fraction, not the step count
    assert objective_function("forward-then-jeffreys", 3, 10**7, fraction=0.5) is reverse_kl
    assert objective_function("forward-then-jeffreys", 3, 10**7, fraction=0.05) is forward_kl


def test_jeffreys_gradient_is_the_sum_of_the_reverse_and_forward_kl_gradients_on_the_same_draws():
    torch.manual_seed(0)
    flow = NSF(2, num_layers=2, hidden=8)
    target = load_target("banana")

    def gradient(objective):
        flow.zero_grad()
        objective(flow, target, 64, None, torch.Generator().manual_seed(3)).backward()
        return torch.cat([p.grad.flatten() for p in flow.parameters()])
    both = gradient(jeffreys)
    assert both.abs().max() > 0
    torch.testing.assert_close(both, gradient(reverse_kl) + gradient(forward_kl), rtol=1e-4, atol=1e-5)


def test_the_student_t_base_has_its_density_and_its_spread_and_leaves_the_flow_size_alone():
    base = StudentTBase(3, df=5)
    z = base.rsample(200_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(base.log_prob(z[:100]), base.distribution().log_prob(z[:100]))
    assert abs(float(z.var(0).mean()) - 5 / 3) < 0.05  # Var t_ν = ν / (ν − 2)
    assert float((z.abs() > 6).double().mean()) > 1e-3  # tails far beyond a normal's (P(|N| > 6) ≈ 2e-9)
    same = base.rsample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(same, base.rsample(5, generator=torch.Generator().manual_seed(1)))
    flow = NSF(2, num_layers=2, hidden=8)
    size = sum(p.numel() for p in flow.parameters())
    student_t_base(flow, df=4)
    x, log_q = flow.sample_and_log_prob(8, generator=torch.Generator().manual_seed(2))
    assert sum(p.numel() for p in flow.parameters()) == size
    torch.testing.assert_close(log_q, flow.log_prob(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        StudentTBase(2, df=2.5)


def test_the_student_t_mixture_base_draws_its_density_which_integrates_to_one_and_passes_path_gradients():
    torch.manual_seed(0)
    base = StudentTMixtureBase(2, components=3, df=5).double()
    with torch.no_grad():
        base.log_scale.copy_(torch.tensor([[-0.5, 0.0], [0.3, -0.2], [0.1, 0.4]]))
    z = base.rsample(64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(base.log_prob(z), base.distribution().log_prob(z))
    assert torch.equal(z, base.rsample(64, generator=torch.Generator().manual_seed(0)))
    many = base.sample(400_000, generator=torch.Generator().manual_seed(3))
    loc, scale = base.loc.detach(), base.log_scale.detach().exp()
    torch.testing.assert_close(many.mean(0), loc.mean(0), atol=0.02, rtol=0)
    variance = (scale ** 2 * 5 / 3).mean(0) + loc.var(0, unbiased=False)  # Var t_5 = 5/3, plus the spread of the means
    torch.testing.assert_close(many.var(0), variance, rtol=0.03, atol=0)
    grid = torch.linspace(-40, 40, 1601, dtype=torch.float64)
    cells = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = base.log_prob(cells).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(float(mass) - 1) < 2e-3
    base.rsample(20_000, generator=torch.Generator().manual_seed(1)).mean(0).sum().backward()
    torch.testing.assert_close(base.loc.grad, torch.full((3, 2), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0)
    assert base.log_scale.grad.abs().min() > 0  # every component, every coordinate
    flow = NSF(2, num_layers=2, hidden=8)
    size = sum(p.numel() for p in flow.parameters())
    student_t_base(flow, df=5, components=4)
    assert sum(p.numel() for p in flow.parameters()) == size + 2 * 4 * 2
    x, log_q = flow.sample_and_log_prob(8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(log_q, flow.log_prob(x), rtol=1e-4, atol=1e-4)
    for bad in ({"shape": (1, 2)}, {"shape": 2, "components": 0}, {"shape": 2, "components": "3"},
                {"shape": 2, "df": 0.5}, {"shape": 2, "scale": 0.0}, {"shape": 2, "spread": float("nan")}):
        with pytest.raises(ValueError):
            StudentTMixtureBase(**bad)
    with pytest.raises(ValueError, match="temperature"):
        base.rsample(2, temperature=0.5)


def test_a_mixture_base_flow_density_integrates_to_one():
    torch.manual_seed(0)
    flow = student_t_base(NSF(2, num_layers=2, hidden=8, bound=3.0), components=3).double()
    grid = torch.linspace(-25, 25, 801, dtype=torch.float64)  # beyond ±25 lies about 1e-6 of the mass
    with torch.no_grad():
        mass = flow.log_prob(torch.cartesian_prod(grid, grid)).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(float(mass) - 1) < 2e-3


def test_fit_with_a_time_budget_stops_on_the_clock_and_evaluates_at_the_end():
    torch.manual_seed(0)
    out = fit(NSF(2, num_layers=2, hidden=8), load_target("banana"), steps=10**7, seconds=1.0, eval_every=10**6)
    assert 0 < out["steps"] < 10**7 and 1.0 <= out["seconds"] < 10
    assert [h["step"] for h in out["history"]] == [out["steps"]]
    # the schedule follows the clock: by step count (of 10**7) the rate would still be at its peak, 3e-3
    assert out["history"][-1]["lr"] < 0.5 * 3e-3


@pytest.mark.parametrize("shape", [-0.3, 0.2, 0.5, 0.9, 1.4])
def test_pareto_shape_recovers_a_known_generalized_pareto(shape):
    draws = torch.from_numpy(genpareto.rvs(shape, scale=3.0, size=4000, random_state=7))
    assert generalized_pareto_shape(draws) == pytest.approx(shape, abs=0.12)


def test_pareto_k_grows_with_the_spread_of_log_normal_weights():
    gen = torch.Generator().manual_seed(0)
    ks = [pareto_k(sigma * torch.randn(20_000, generator=gen)) for sigma in (0.2, 1.0, 2.0, 3.0)]
    assert ks == sorted(ks) and ks[0] < 0.3 and ks[-1] > 0.7


def test_importance_summary_is_invariant_to_a_constant_except_log_z():
    log_w = torch.randn(5000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = importance_summary(log_w), importance_summary(log_w + 7.0)
    for key in ("ess_per_draw", "pareto_k", "log_z_stderr"):
        assert a[key] == pytest.approx(b[key], rel=1e-9)
    assert b["log_z"] - a["log_z"] == pytest.approx(7.0) and b["elbo"] - a["elbo"] == pytest.approx(7.0)


def test_mode_coverage_counts_modes_with_a_fair_share_of_draws():
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    draws = torch.cat([modes[0] + 0.1 * torch.randn(500, 2), modes[1] + 0.1 * torch.randn(500, 2),
                       modes[2] + 0.1 * torch.randn(10, 2)])
    assert mode_coverage(draws, modes) == 0.5
    # with p's share of each mode: 10 draws of 1,010 are a fair share of a mode holding 2% of p
    assert mode_coverage(draws, modes, torch.tensor([0.49, 0.49, 0.02, 0.0])) == 1.0
    assert mode_coverage(draws, modes, torch.tensor([0.25, 0.25, 0.25, 0.25])) == 0.5


def test_the_double_wells_modes_hold_their_quadrature_shares():
    """The tilt ½x makes the right well e^{1.7} times as likely; exact draws of p (a grid) cover every mode."""
    target = load_target("double-well", 2)
    assert torch.allclose(target.mode_mass.sum(), torch.tensor(1.0))
    x = torch.linspace(-3, 3, 6001)[:, None]
    grid = torch.cat([x, torch.zeros_like(x)], 1)
    p = target(grid).softmax(0)
    assert target.mode_mass[1] == pytest.approx(float(p[x[:, 0] > 0].sum()), abs=1e-3)
    draws = grid[torch.multinomial(p, 4000, replacement=True, generator=torch.Generator().manual_seed(0))]
    assert mode_coverage(draws, target.modes, target.mode_mass) == 1.0


@pytest.fixture(scope="module")
def gmm_fits():
    """Short fits of the same small NSF to the Gaussian mixture by the path-gradient ELBO and by forward KL."""
    results = {}
    for objective in ("stl", "forward-kl"):
        torch.manual_seed(0)
        flow = NSF(2, num_layers=3, hidden=32, standardize=True)
        set_target_scale(flow, load_target("gmm").scale)  # the initial q spreads over the mixture's box
        results[objective] = fit(flow, load_target("gmm"), steps=300, objective=objective, eval_every=100)
    return results


def test_a_short_fit_estimates_the_mixture_log_z_within_three_standard_errors(gmm_fits):
    result = gmm_fits["forward-kl"]
    assert abs(result["log_z"] - result["true_log_z"]) < 3 * result["log_z_stderr"]
    assert 0 < result["ess_per_draw"] <= 1 and result["elbo"] < result["true_log_z"]


def test_mode_coverage_of_reverse_and_forward_kl_is_reported(gmm_fits):
    reverse, forward = gmm_fits["stl"]["modes_covered"], gmm_fits["forward-kl"]["modes_covered"]
    print(f"\nmodes covered on the 8-mode mixture after 300 steps: reverse KL (STL) {reverse:.0%}, "
          f"forward KL {forward:.0%}")
    assert forward >= reverse and forward > 0.5


def test_fit_improves_the_elbo_of_an_amortised_flow():
    """q(x | c) for p̃(x | c) = N(x; c·(1, −1), I) with c ~ U(−2, 2)."""
    def target(x, c):
        return torch.distributions.Normal(c * torch.tensor([1.0, -1.0]), 1.0).log_prob(x).sum(-1)

    def contexts(n, generator):
        return 4 * torch.rand(n, 1, generator=generator) - 2

    torch.manual_seed(0)
    flow = NSF(2, num_layers=2, hidden=16, context_dim=1)
    history = fit(flow, target, steps=150, eval_every=50, context_sampler=contexts)["history"]
    assert history[-1]["elbo"] > history[0]["elbo"] and history[-1]["elbo"] > -0.3  # log Z = 0


def test_fit_run_eval_sample_and_plot_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "gmm"
    code, out, err = cli(capsys, "fit", "--target", "banana", "--out", run, *FAST[:-1])
    assert code == 0, err
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["fit_curves.png", "fit_density.png"]
    code, out, _ = cli(capsys, "eval", run, "--json")
    report = json.loads(out)
    assert code == 0 and {"elbo", "log_z", "log_z_stderr", "ess_per_draw", "pareto_k", "kl"} <= report.keys()
    assert report["kl"] == pytest.approx(report["true_log_z"] - report["elbo"])
    for name, extra in (("x.csv", []), ("resampled.csv", ["--resample"])):
        code, _, err = cli(capsys, "sample", run, "-n", "50", "-o", tmp_path / name, *extra)
        assert code == 0 and len((tmp_path / name).read_text().splitlines()) == 51, err
    assert cli(capsys, "fit", "--resume", run, "--steps", "40", "--no-progress", "--no-plots")[0] == 0
    assert json.loads((run / "results.json").read_text())["steps"] == 40
    recorded = json.loads((run / "config.json").read_text())["train"]  # the new length and its interval
    assert recorded["steps"] == 40 and recorded["eval_every"] == _resumed_eval_every(run, 40)


def _resumed_eval_every(run, steps):
    from flowforge.variational.cli import _resumed_config

    return _resumed_config(run, steps).eval_every


def test_a_fit_records_every_builder_option_and_a_format_3_maf_fit_resumes_with_its_old_bound(tmp_path, capsys):
    """A format-3 `fit --model maf` run recorded no scale_bound (then fixed at 1): its resume, eval and
    sample rebuild that bound, not the builder's default of today."""
    from flowforge.training import load_run
    from flowforge.transforms import Affine
    from flowforge.variational.cli import _resumed_config

    run = tmp_path / "maf"
    assert cli(capsys, "fit", "--target", "banana", "--model", "maf", "--out", run, *FAST)[0] == 0
    config = json.loads((run / "config.json").read_text())
    assert {"scale_bound", "activation", "lu"} <= config["train"]["model_options"].keys()
    config["config_version"] = 3
    del config["train"]["model_options"]["scale_bound"]
    config["train"]["model_options"].pop("lu")  # format 3 wrote only the recipe's sizes
    (run / "config.json").write_text(json.dumps(config))
    assert _resumed_config(run, 40).model_options["scale_bound"] == 1.0  # what `fit --resume` trains on
    assert cli(capsys, "fit", "--resume", run, "--steps", "40", "--no-progress", "--no-plots")[0] == 0
    flow, loaded, _ = load_run(run)
    assert loaded.model_options["scale_bound"] == 1.0
    assert {m.bound for m in flow.modules() if isinstance(m, Affine)} == {1.0}


def test_fit_repeats_with_the_same_seed(tmp_path, capsys):
    for name in ("a", "b"):
        assert cli(capsys, "fit", "--target", "ring", "--out", tmp_path / name, "--seed", "3", *FAST)[0] == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


BAD_TARGETS = {
    "nan.py": ("def log_prob(x):\n    return x[:, 0] * float('nan')\n", "NaN"),
    "posinf.py": ("def log_prob(x):\n    return x[:, 0] * 0 + float('inf')\n", "+inf"),
    "neginf.py": ("import torch\ndef log_prob(x):\n    return torch.where(x[:, 0] > 0, -x[:, 1] ** 2, -torch.inf)\n",
                  "-inf at"),
    "detached.py": ("def log_prob(x):\n    return -(x ** 2).sum(-1).detach()\n", "without a gradient"),
    "shape.py": ("def log_prob(x):\n    return x.sum(-1, keepdim=True)\n", "one log-density per row"),
    "raises.py": ("def log_prob(x):\n    raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
    "broken.py": ("def log_prob(x:\n", "importing"),
    # sys.exit at import left rc 0 and no word; with a message, a traceback wall
    "exits0.py": ("import sys\nsys.exit(0)\n", "called sys.exit(0)"),
    "exits_message.py": ("import sys\nsys.exit('no data file found')\n", "called sys.exit('no data file found')"),
    "exits_in_call.py": ("import sys\ndef log_prob(x):\n    sys.exit(3)\n", "called sys.exit(3)"),
    # a NumPy result was told its shape (64,) was wrong
    "numpy.py": ("def log_prob(x):\n    return -(x.detach().numpy() ** 2).sum(-1)\n", "returned a ndarray, not a torch tensor"),
}


@pytest.mark.parametrize("name", sorted(BAD_TARGETS))
def test_a_bad_target_gets_one_line_naming_it(tmp_path, capsys, name):
    source, words = BAD_TARGETS[name]
    (tmp_path / name).write_text(source)
    spec = f"{tmp_path / name}:log_prob"
    code, _, err = cli(capsys, "fit", "--target", spec, "--dim", "2", "--out", tmp_path / "run", *FAST)
    assert code == 1
    assert_one_line(err, "error", spec, words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spec, words", [
    ("{tmp}/missing.py:f", ("no such file",)), ("{tmp}/ok.py:absent", ("defines no function 'absent'",)),
    ("nonsense", ("neither a built-in target",)), ("{tmp}/ok.py:log_prob", ("--dim",))])
def test_a_missing_file_function_or_name_gets_one_line(tmp_path, capsys, spec, words):
    (tmp_path / "ok.py").write_text("def log_prob(x):\n    return -(x ** 2).sum(-1)\n")
    spec = spec.format(tmp=tmp_path)
    code, _, err = cli(capsys, "fit", "--target", spec, "--out", tmp_path / "run", *FAST)
    assert code == 1
    assert_one_line(err, "error", *words)


def test_a_users_target_fits_and_its_run_evaluates_without_importing_it(tmp_path, capsys):
    (tmp_path / "mine.py").write_text("def log_prob(x):\n    return -0.5 * (x ** 2).sum(-1)\n")
    run = tmp_path / "run"
    assert cli(capsys, "fit", "--target", f"{tmp_path / 'mine.py'}:log_prob", "--dim", "3", "--out", run, *FAST)[0] == 0
    (tmp_path / "mine.py").write_text("raise SystemExit('imported on load')\n")
    code, out, err = cli(capsys, "eval", run, "--json")
    assert code == 0 and json.loads(out)["stored"] is True and json.loads(out)["draws"] == 20_000, err
    code, _, err = cli(capsys, "sample", run, "-n", "5", "-o", tmp_path / "x.csv", "--resample")
    assert code == 1 and "--resample needs the run's target" in err


def test_forward_kl_fits_a_gradient_free_target_that_the_reverse_kl_refuses_and_neither_takes_minus_inf(
        tmp_path, capsys):
    """The forward KL needs only the target's values (NumPy will do); any objective refuses −inf at a
    draw (a flow has mass everywhere), before anything is written."""
    (tmp_path / "numpy_target.py").write_text("import torch\ndef log_prob(x):\n"
                                              "    return torch.from_numpy(-0.5 * (x.numpy() ** 2).sum(-1))\n")
    spec = f"{tmp_path / 'numpy_target.py'}:log_prob"
    code, _, err = cli(capsys, "fit", "--target", spec, "--dim", "2", "--objective", "forward-kl",
                       "--out", tmp_path / "fkl", *FAST)
    assert code == 0, err
    assert 0.5 < json.loads((tmp_path / "fkl" / "results.json").read_text())["ess_per_draw"] <= 1
    code, _, err = cli(capsys, "fit", "--target", spec, "--dim", "2", "--out", tmp_path / "stl", *FAST)
    assert code == 1 and not (tmp_path / "stl").exists()
    assert_one_line(err, "error", "without a gradient with respect to x", "--objective forward-kl")
    source, words = BAD_TARGETS["neginf.py"]
    (tmp_path / "neginf.py").write_text(source)
    code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / 'neginf.py'}:log_prob", "--dim", "2",
                       "--objective", "forward-kl", "--out", tmp_path / "run", *FAST)
    assert code == 1 and words in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("made_before", [False, True])
def test_a_fit_that_fails_before_its_first_checkpoint_leaves_no_run_directory(tmp_path, capsys, made_before):
    """The target passes the check before the run is written, then raises on the first step: the
    half-made run (config, manifest, metrics) is removed, since there is nothing to resume; an empty
    --out the user made beforehand stays, empty, and takes the next fit."""
    if made_before:
        (tmp_path / "run").mkdir()
    (tmp_path / "gives_out.py").write_text("calls = 0\ndef log_prob(x):\n    global calls\n    calls += 1\n"
                                           "    if calls > 1:\n        raise RuntimeError('gave out')\n"
                                           "    return -(x ** 2).sum(-1)\n")
    code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / 'gives_out.py'}:log_prob", "--dim", "2",
                       "--out", tmp_path / "run", *FAST)
    assert code == 1
    assert_one_line(err, "error", "raised RuntimeError: gave out")
    if not made_before:
        assert not (tmp_path / "run").exists()
        return
    assert [p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")] == []
    assert cli(capsys, "fit", "--target", "banana", "--out", tmp_path / "run", *FAST)[0] == 0


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """A short banana fit, shared by the tests of what commands may do with it."""
    run = tmp_path_factory.mktemp("fitted") / "banana"
    from flowforge.cli import main

    assert main(["fit", "--target", "banana", "--out", str(run), *FAST]) == 0
    return run


@pytest.mark.parametrize("option", [["--lr", "0.01"], ["--target", "gmm"], ["--objective", "stl"], ["--seed", "4"],
                                    ["--layers", "3"], ["--force"]])
def test_fit_resume_refuses_an_option_it_would_ignore(fitted_run, capsys, option):
    before = (fitted_run / "config.json").read_bytes()
    code, _, err = cli(capsys, "fit", "--resume", fitted_run, "--steps", "60", *option, "--no-progress")
    assert code == 2
    assert_one_line(err, "error", f"{option[0]} cannot be given with --resume", "--steps")
    assert (fitted_run / "config.json").read_bytes() == before


def test_a_resume_to_fewer_steps_than_taken_says_nothing_is_left(fitted_run, capsys):
    code, _, err = cli(capsys, "fit", "--resume", fitted_run, "--steps", "10", "--no-progress", "--no-plots")
    assert code == 0 and "has already taken 30 steps of the 10 asked: nothing to continue" in err


def test_eval_and_sample_refuse_options_a_fitted_run_cannot_use(fitted_run, tmp_path, capsys):
    code, _, err = cli(capsys, "eval", fitted_run, "--data", "moons")
    assert code == 2 and "evaluated against that target, not data" in err
    code, _, err = cli(capsys, "sample", fitted_run, "-n", "5", "-o", tmp_path / "x.csv", "--resample",
                       "--temperature", "0.5")
    assert code == 2 and "--temperature cannot be given with --resample" in err
    assert not (tmp_path / "x.csv").exists()


def test_resample_is_refused_for_a_run_trained_on_data(tmp_path, capsys):
    run = tmp_path / "moons"
    assert cli(capsys, "train", "--data", "moons", "--model", "realnvp", "--steps", "5", "--out", run,
               "--no-plots", "--no-progress")[0] == 0
    code, _, err = cli(capsys, "sample", run, "-n", "5", "-o", tmp_path / "x.csv", "--resample")
    assert code == 2 and "only a run of `flowforge fit`" in err


@pytest.mark.parametrize("threshold, warned", [(0.0, True), (10.0, False)])
def test_eval_warns_when_the_importance_weights_are_unreliable(fitted_run, capsys, monkeypatch, threshold, warned):
    """eval warns, as fit does, when k̂ reaches the threshold (every k̂ ≥ 0; none reaches 10)."""
    monkeypatch.setattr("flowforge.variational.diagnostics.PARETO_K_WARNING", threshold)
    code, out, err = cli(capsys, "eval", fitted_run, "--json")
    assert code == 0 and json.loads(out)["pareto_k"] >= 0
    assert ("warning: Pareto k-hat of the importance weights" in err) == warned


def test_an_amortised_diagnosis_counts_its_draws_as_a_whole_number():
    def target(x, c):
        return torch.distributions.Normal(c, 1.0).log_prob(x).sum(-1)

    flow = NSF(2, num_layers=1, hidden=8, context_dim=2)
    summary = diagnose(flow, target, 100, context=torch.zeros(4, 2))
    assert summary["draws"] == 100 and isinstance(summary["draws"], int)


def test_a_short_fit_is_still_evaluated_ten_times_and_the_recipe_keeps_its_cadence():
    from flowforge.variational.fitting import fit_config

    assert fit_config("nsf", "gmm").eval_every == 200
    assert fit_config("nsf", "gmm", steps=300).eval_every == 30
    assert fit_config("nsf", "gmm", steps=5).eval_every == 1
    assert fit_config("nsf", "gmm", steps=300, eval_every=100).eval_every == 100


@pytest.mark.parametrize("command", ["fit", "train"])
def test_resuming_a_directory_that_does_not_exist_says_so(tmp_path, capsys, command):
    code, _, err = cli(capsys, command, "--resume", tmp_path / "absent", "--steps", "5", "--no-progress")
    assert code == 1
    assert_one_line(err, "error", "absent: no such run directory to resume")
    assert not (tmp_path / "absent").exists()


def test_a_file_target_is_recorded_by_its_absolute_path_and_resumes_from_anywhere(tmp_path, capsys, monkeypatch):
    (tmp_path / "mine.py").write_text("def log_prob(x):\n    return -0.5 * (x ** 2).sum(-1)\n")
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "fit", "--target", "mine.py:log_prob", "--dim", "2", "--out", "run", *FAST)[0] == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["variational"]["target"]
    assert recorded == f"{tmp_path / 'mine.py'}:log_prob"
    code, _, err = cli(capsys, "sample", "run", "-n", "3", "-o", "mine.py", "--force")  # the target: kept
    assert code == 1 and "the data it was trained on" in err and "def log_prob" in (tmp_path / "mine.py").read_text()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = cli(capsys, "fit", "--resume", tmp_path / "run", "--steps", "300", "--no-progress", "--no-plots")
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 300 and steps[-2] == 270  # the resumed run is evaluated as a 300-step fit would be


def test_a_run_of_fit_resumed_by_train_and_a_resample_of_unreliable_weights_say_so(fitted_run, tmp_path, capsys,
                                                                                  monkeypatch):
    code, _, err = cli(capsys, "train", "--resume", fitted_run, "--steps", "60", "--no-progress")
    assert code == 1
    assert_one_line(err, "error", "was fitted to a target, not trained on data", "flowforge fit --resume")
    monkeypatch.setattr("flowforge.variational.diagnostics.PARETO_K_WARNING", -math.inf)
    code, _, err = cli(capsys, "sample", fitted_run, "-n", "20", "-o", tmp_path / "x.csv", "--resample")
    assert code == 0
    assert_one_line(err, "warning", "Pareto k-hat", "resampled draws are unreliable")


@pytest.mark.parametrize("command", [["eval", "{run}"], ["plot", "{run}"], ["train", "--resume", "{run}", "--steps", "40"],
                                     ["fit", "--resume", "{run}", "--steps", "40"],
                                     ["sample", "{run}", "-n", "5", "-o", "{out}", "--resample"]])
def test_a_corrupt_variational_section_is_one_line_naming_the_file(fitted_run, tmp_path, capsys, command):
    run = tmp_path / "copy"
    shutil.copytree(fitted_run, run)
    raw = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**raw, "variational": "banana"}))
    before = sorted((p.name, p.read_bytes()) for p in run.rglob("*") if p.is_file())
    code, _, err = cli(capsys, *[c.format(run=run, out=tmp_path / "x.csv") for c in command])
    assert code == 1
    assert_one_line(err, "error", f"{run / 'config.json'}: corrupt 'variational' section")
    assert sorted((p.name, p.read_bytes()) for p in run.rglob("*") if p.is_file()) == before
    assert not (tmp_path / "x.csv").exists()


def test_eval_of_a_file_target_warns_on_its_stored_pareto_k(tmp_path, capsys, monkeypatch):
    (tmp_path / "mine.py").write_text("def log_prob(x):\n    return -0.5 * (x ** 2).sum(-1)\n")
    run = tmp_path / "run"
    assert cli(capsys, "fit", "--target", f"{tmp_path / 'mine.py'}:log_prob", "--dim", "2", "--out", run, *FAST)[0] == 0
    monkeypatch.setattr("flowforge.variational.diagnostics.PARETO_K_WARNING", -math.inf)
    code, out, err = cli(capsys, "eval", run)
    assert code == 0 and "stored at fit time" in out
    assert_one_line(err, "warning", "Pareto k-hat")


@pytest.mark.parametrize("amortised", [False, True])
def test_the_python_fit_refuses_a_gradient_free_target_before_its_first_step(amortised):
    """fit() checks the target as `flowforge fit` does: a detached one under the default objective
    (whose first tenth is forward KL) is refused at once, naming the Python argument."""
    def target(x, c=None):
        return -(x ** 2).sum(-1).detach()

    flow = NSF(2, num_layers=1, hidden=8, context_dim=1 if amortised else 0)
    sampler = (lambda n, g: torch.rand(n, 1, generator=g)) if amortised else None
    with pytest.raises(FlowforgeError, match="objective='forward-kl'"):
        fit(flow, target, steps=10_000, context_sampler=sampler)
    assert fit(flow, target, steps=4, eval_every=2, objective="forward-kl", context_sampler=sampler)["steps"] == 4


def test_the_target_check_leaves_a_samplers_global_random_draws_to_the_fit():
    """A context sampler that draws from torch's global generator: after the check that fit() runs
    before its first step, the global generator is where it was (the check runs on forked ones)."""
    from flowforge.variational.fitting import check_target

    def target(x, c):
        return torch.distributions.Normal(c, 1.0).log_prob(x).sum(-1)

    def contexts(n, generator):
        return torch.rand(n, 2)

    flow = NSF(2, num_layers=1, hidden=8, context_dim=2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_target(flow, target, "forward-then-jeffreys", 0, contexts)
    assert torch.equal(torch.rand(3), expected)


def test_placement_finds_where_a_targets_mass_lies_and_leaves_a_target_in_reach_alone():
    from flowforge.variational.placement import target_placement

    def two_modes(x):  # ±8: the placement covers both (mass-covering), centred between them
        return torch.logsumexp(torch.stack([-0.5 * ((x - 8) ** 2).sum(-1), -0.5 * ((x + 8) ** 2).sum(-1)]), 0)

    def nan_far_out(x):  # overflows to NaN far out, where the fit never goes: no mass there
        return torch.where(x.abs().max(-1).values > 40, torch.nan, -0.5 * ((x - 10) ** 2).sum(-1))

    for seed in range(3):  # whichever seed: the search does not depend on a lucky first draw
        loc, scale = target_placement(lambda x: -0.5 * (((x - 5) / 0.5) ** 2).sum(-1), 10, seed=seed)
        assert torch.allclose(loc, torch.full_like(loc, 5.0), atol=0.1) and torch.allclose(scale, torch.full_like(scale, 0.5), rtol=0.1)
        loc, scale = target_placement(lambda x: -0.5 * ((x - 100) ** 2).sum(-1), 2, seed=seed)
        assert torch.allclose(loc, torch.full_like(loc, 100.0), atol=0.1) and torch.allclose(scale, torch.ones_like(scale), rtol=0.1)
        loc, scale = target_placement(two_modes, 2, seed=seed)
        assert loc.abs().max() < 2.5 and torch.allclose(scale, torch.full_like(scale, 8.0), rtol=0.1)
        loc, _ = target_placement(nan_far_out, 2, seed=seed)
        assert torch.allclose(loc, torch.full_like(loc, 10.0), atol=0.1)
    loc, scale = target_placement(lambda x: -0.5 * ((x / 100) ** 2).sum(-1), 2, seed=0)
    assert torch.allclose(scale, torch.full_like(scale, 100.0), rtol=0.1)
    for in_reach in ("moons", "ring"):  # a unit-scale target keeps the flow as built
        target = load_target(in_reach)
        assert target_placement(target, target.dim, seed=0) is None, in_reach
    assert target_placement(lambda x: -0.5 * (x ** 2).sum(-1), 10, seed=0) is None
    # 5% of N(0, 2²)'s mass lies past ±4, where a spline flow on a Gaussian base has almost none: placed
    _, scale = target_placement(lambda x: -0.5 * ((x / 2) ** 2).sum(-1), 2, seed=0)
    assert torch.allclose(scale, torch.full_like(scale, 2.0), rtol=0.1)
    _, scale = target_placement(load_target("banana"), 2, seed=0)  # its arm x₂ ≈ x₁² reaches ~11 (99.9%)
    assert 2.4 < scale[1] < 3.2 and abs(scale[0] - 1) < 0.1
    assert target_placement(lambda x: 1 / 0, 2, seed=0) is None  # the fit's own check names such a target
    with pytest.warns(UserWarning, match="could not locate where target .* keeps its mass"):
        assert target_placement(lambda x: -0.5 * ((x / 0.01) ** 2).sum(-1), 10, seed=0) is None


def fitted_file_target(tmp_path, capsys, source: str, dim: int, steps: int):
    """A `flowforge fit` run of the target ``log_prob`` in a file of ``source``, at the defaults."""
    (tmp_path / "target.py").write_text(source)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / 'target.py'}:log_prob", "--dim", str(dim), "--out", run,
                       "--steps", str(steps), "--no-progress", "--no-plots")
    assert code == 0, err
    return run


def test_a_file_target_run_is_evaluated_and_resampled_afresh_only_when_asked_to_import_it(tmp_path, capsys,
                                                                                         trained_run):
    run = fitted_file_target(tmp_path, capsys, "def log_prob(x):\n    return -0.5 * ((x - 1) ** 2).sum(-1)\n", 2, 200)
    code, out, _ = cli(capsys, "eval", run, "--json")
    assert code == 0 and json.loads(out)["stored"] is True
    code, out, _ = cli(capsys, "eval", run, "--json", "--import-target")
    fresh = json.loads(out)
    assert code == 0 and "stored" not in fresh and fresh["draws"] == 20_000
    assert abs(fresh["log_z"] - math.log(2 * math.pi)) < 0.05  # N((1, 1), I) unnormalised
    code, _, err = cli(capsys, "sample", run, "-n", 5, "-o", tmp_path / "x.csv", "--resample")
    assert code == 1 and "--import-target" in err and not (tmp_path / "x.csv").exists()
    code, _, _ = cli(capsys, "sample", run, "-n", 2000, "-o", tmp_path / "x.csv", "--resample", "--import-target")
    drawn = np.loadtxt(tmp_path / "x.csv", delimiter=",", skiprows=1)
    assert code == 0 and drawn.shape == (2000, 2) and np.allclose(drawn.mean(0), 1.0, atol=0.1)
    code, _, err = cli(capsys, "sample", run, "-n", 5, "-o", tmp_path / "y.csv", "--import-target")
    assert code == 2 and "goes with --resample" in err
    code, _, err = cli(capsys, "eval", trained_run, "--import-target")
    assert code == 2 and "only a run of `flowforge fit`" in err
    # A run whose config lost its target's digest (edited, or made elsewhere) imports nothing.
    (tmp_path / "evil.py").write_text("raise SystemExit('imported')\n")
    config = json.loads((run / "config.json").read_text())
    section = config["variational"]
    section.pop("target_sha256")
    section["target"] = f"{tmp_path / 'evil.py'}:log_prob"
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli(capsys, "eval", run, "--import-target")
    assert code == 1 and "records no SHA-256 of its target file" in err


def test_what_a_target_file_prints_goes_to_stderr_so_eval_json_stays_json(tmp_path, capsys):
    # a print at import came before eval --json's object on stdout, which then was no JSON
    source = "print('HELLO at import')\ndef log_prob(x):\n    print('called')\n    return -0.5 * (x ** 2).sum(-1)\n"
    run = fitted_file_target(tmp_path, capsys, source, 2, 50)
    code, out, err = cli(capsys, "eval", run, "--json", "--import-target")
    assert code == 0 and json.loads(out)["draws"] == 20_000 and "HELLO at import" in err


def test_a_file_target_far_from_the_origin_is_fitted_where_it_lies(tmp_path, capsys):
    """N((10, 10), I): the default NSF's splines reach ±4 only, so unplaced its q piled up at the
    edge (log Z −39.6 against 1.838); placed, it fits the target (log Z = log 2π)."""
    run = fitted_file_target(tmp_path, capsys, "def log_prob(x):\n    return -0.5 * ((x - 10) ** 2).sum(-1)\n", 2, 300)
    results = json.loads((run / "results.json").read_text())
    assert abs(results["log_z"] - math.log(2 * math.pi)) < 0.05 and results["ess_per_draw"] > 0.9
    placement = json.loads((run / "config.json").read_text())["variational"]["placement"]
    assert all(abs(v - 10) < 0.5 for v in placement["loc"])
    # its figure was a blank [-4, 4]² about the origin, with no target panel though the fit imported it
    from flowforge.training import load_run
    from flowforge.variational.figures import density_panels, figure_window

    flow, target = load_run(run)[0], load_target(f"{tmp_path / 'target.py'}:log_prob", 2)
    box, centre = figure_window(flow, None)
    assert all(abs(c - 10) < 0.5 for c in centre) and all(3 < half < 8 for half in box)
    panels = density_panels(flow, target, box, n=100, centre=centre)
    assert len(panels.axes) == 3 and all(ax.get_xlim()[0] > 2 for ax in panels.axes)  # p, q, draws about (10, 10)


def test_a_changed_target_file_is_refused_on_resume_and_named_by_eval(tmp_path, capsys):
    """Resumed steps against an edited file would mix two targets in one run; eval's stored
    diagnostics are of the file as it was."""
    mine = tmp_path / "mine.py"
    mine.write_text("def log_prob(x):\n    return -0.5 * (x ** 2).sum(-1)\n")
    run = tmp_path / "run"
    assert cli(capsys, "fit", "--target", f"{mine}:log_prob", "--dim", "2", "--out", run, *FAST)[0] == 0
    code, _, err = cli(capsys, "fit", "--resume", run, "--steps", "40", "--no-progress", "--no-plots")
    assert code == 0, err  # the same file: it goes on
    mine.write_text("def log_prob(x):\n    return -0.5 * ((x - 10) ** 2).sum(-1)\n")
    before = file_hashes(run)
    code, _, err = cli(capsys, "fit", "--resume", run, "--steps", "60", "--no-progress", "--no-plots")
    assert code == 1
    assert_one_line(err, "error", f"{mine}: changed (or gone) since", "start a new run")
    assert file_hashes(run) == before
    code, out, err = cli(capsys, "eval", run)
    assert code == 0 and "stored at fit time: the target file has changed since" in out
    assert "--import-target" not in out  # it would be refused: not offered
    assert_one_line(err, "warning", f"{mine}: changed (or gone) since the fit")
    code, _, err = cli(capsys, "sample", run, "-n", "5", "-o", tmp_path / "draws.csv", "--resample")
    assert code == 1 and not (tmp_path / "draws.csv").exists()
    assert_one_line(err, "error", f"--resample needs the run's target, and {mine} has changed (or gone)")
    code, _, err = cli(capsys, "eval", run, "--import-target")  # never against another target than the fit's
    assert code == 1
    assert_one_line(err, "error", f"{mine}: changed (or gone) since the fit; --import-target imports only")


@pytest.mark.parametrize("fails_at_call", [1, 20])
def test_a_target_failing_mid_fit_names_the_step_and_what_the_run_keeps(tmp_path, capsys, fails_at_call):
    """A target raising at a training step (a batch of 256 draws: the checks before the fit take
    other sizes) stops the fit in one line that says at which step, and whether a checkpoint is
    there to resume (eval then says so too)."""
    (tmp_path / "flaky.py").write_text(
        "calls = 0\ndef log_prob(x):\n    global calls\n    calls += len(x) == 256\n"
        f"    if calls >= {fails_at_call}:\n        raise RuntimeError('solver diverged')\n"
        "    return -0.5 * (x ** 2).sum(-1)\n")
    run = tmp_path / "run"
    code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / 'flaky.py'}:log_prob", "--dim", "2", "--out", run, *FAST)
    assert code == 1
    if fails_at_call == 1:
        assert_one_line(err, "error", "step 1: target", "raised RuntimeError: solver diverged", "no checkpoint")
        assert not run.exists()
    else:
        assert_one_line(err, "error", "step 20: target", "raised RuntimeError: solver diverged",
                        "keeps its last checkpoint", f"flowforge fit --resume {run}")
        code, _, err = cli(capsys, "eval", run)
        assert code == 1
        assert_one_line(err, "error", "its fit stopped before the end", f"flowforge fit --resume {run}")


def test_the_python_fit_refuses_what_it_cannot_fit_in_one_line_each():
    flow = NSF(3, num_layers=1, hidden=8)
    with pytest.raises(FlowforgeError, match="the flow is 3-D but target gmm is 2-D"):
        fit(flow, load_target("gmm"), steps=5)
    gaussian = lambda x, c=None: -0.5 * (x ** 2).sum(-1)  # noqa: E731
    for steps, draws in ((0, 256), (10, 1)):
        with pytest.raises(FlowforgeError, match="at least 1 step of at least 2 draws"):
            fit(flow, gaussian, steps=steps, draws=draws)
    with pytest.raises(FlowforgeError, match="returned torch.int64 values; return floating-point"):
        fit(flow, lambda x: (x ** 2).sum(-1).long(), steps=5)
    conditional = NSF(3, num_layers=1, hidden=8, context_dim=1)
    with pytest.raises(FlowforgeError, match=r"context_sampler\(64, generator\) returned \(65, 1\)"):
        fit(conditional, gaussian, steps=5, context_sampler=lambda n, g: torch.rand(n + 1, 1, generator=g))
    with pytest.raises(FlowforgeError, match=r"raised TypeError.*called with the number of conditions and a torch.Gen"):
        fit(conditional, gaussian, steps=5, context_sampler=lambda n: torch.rand(n, 1))  # a raw TypeError before
    with pytest.raises(FlowforgeError, match=r"conditional \(context_dim=1\): give fit\(\) a context_sampler"):
        fit(conditional, gaussian, steps=5)
    with pytest.raises(FlowforgeError, match="resample: n=0; give the number of draws"):
        resample(torch.zeros(4, 3), torch.zeros(4), 0)
    with pytest.raises(FlowforgeError, match=r"give its dimension \(--dim; load_target\(spec, dim\) in Python\)"):
        load_target(f"{__file__}:test_the_python_fit_refuses_what_it_cannot_fit_in_one_line_each")
    # a short fit is evaluated ten times, as `flowforge fit` evaluates it
    assert len(fit(flow, gaussian, steps=30)["history"]) == 10


def test_fit_with_both_out_and_resume_says_not_both(tmp_path, capsys):
    code, _, err = cli(capsys, "fit", "--resume", tmp_path / "a", "--out", tmp_path / "b", "--steps", "5")
    assert code == 2 and "give --out for a new fit or --resume to continue one, not both" in err


def test_a_target_flat_along_a_coordinate_is_warned_of(tmp_path, capsys):
    """--dim 3 for a target that reads x0 and x1: flat along x2, it has no finite normaliser."""
    (tmp_path / "two.py").write_text("def log_prob(x):\n    return -0.5 * (x[:, :2] ** 2).sum(-1)\n")
    code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / 'two.py'}:log_prob", "--dim", "3", "--out",
                       tmp_path / "run", *FAST)
    assert code == 0
    assert "does not change with x[2] at any of 64 draws" in err and "is its dimension 3 right?" in err
    code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / 'two.py'}:log_prob", "--dim", "2", "--out",
                       tmp_path / "run2", *FAST)
    assert code == 0 and "does not change" not in err


def test_a_target_whose_float32_values_lose_resolution_is_warned_of():
    """−|x|²/2 − 10⁶: float32 steps of 0.06 nats there leave the weights a few distinct values."""
    import warnings

    flow = NSF(2, num_layers=1, hidden=8)
    with pytest.warns(UserWarning, match=r"values near 1e\+06, where float32 resolves only steps of 0.06"):
        fit(flow, lambda x: -0.5 * (x ** 2).sum(-1) - 1e6, steps=2)
    # an offset of 10⁴ keeps steps of 0.001 nats; a narrow target's large values differ widely (q is
    # far from its mass, not offset): neither is warned of
    for fine in (lambda x: -0.5 * (x ** 2).sum(-1) - 1e4, lambda x: -0.5 * ((x / 1e-3) ** 2).sum(-1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(flow, fine, steps=2)
        assert not [w for w in caught if "float32 resolves" in str(w.message)]


def test_a_few_resampled_draws_come_from_a_pool_large_enough_for_k_hat(fitted_run, tmp_path, capsys, monkeypatch):
    from flowforge.variational import report

    pools = []
    original = report.log_weights
    monkeypatch.setattr(report, "log_weights", lambda flow, target, n, **kw: pools.append(n) or original(
        flow, target, n, **kw))
    code, _, err = cli(capsys, "sample", fitted_run, "-n", "4", "-o", tmp_path / "x.csv", "--resample")
    assert code == 0, err
    assert pools == [report.EVAL_DRAWS]  # not 8 × 4 = 32 (a k̂ of 32 draws warned of nothing real)


def test_a_resumed_fit_that_fails_leaves_no_stale_results_for_eval(tmp_path, capsys):
    """results.json belongs to the run as it ended; a resume that stops part-way removes it, so eval
    says the fit did not finish instead of reporting the earlier run's numbers as this one's."""
    (tmp_path / "flaky.py").write_text(
        "from pathlib import Path\ndef log_prob(x):\n"
        f"    if len(x) == 256 and Path({str(tmp_path / 'broken')!r}).exists():\n"
        "        raise RuntimeError('solver diverged')\n    return -0.5 * (x ** 2).sum(-1)\n")
    run = tmp_path / "run"
    assert cli(capsys, "fit", "--target", f"{tmp_path / 'flaky.py'}:log_prob", "--dim", "2", "--out", run, *FAST)[0] == 0
    (tmp_path / "broken").touch()
    assert cli(capsys, "fit", "--resume", run, "--steps", "60", "--no-progress", "--no-plots")[0] == 1
    code, _, err = cli(capsys, "eval", run)
    assert code == 1
    assert_one_line(err, "error", "its fit stopped before the end", f"flowforge fit --resume {run}")
    # with --import-target (and for a built-in target) fresh figures of the stopped fit came without a note
    (tmp_path / "broken").unlink()
    code, out, err = cli(capsys, "eval", run, "--import-target")
    assert code == 0 and "ELBO" in out and "its fit has not finished" in err and f"fit --resume {run}" in err


def test_resample_takes_each_conditions_draws_and_refuses_weights_it_cannot_use():
    """log_weights of an amortised q gives (N, K, D) draws and (N, K) weights: each condition's
    column is resampled on its own (it drew the first row n times); NaN, +inf, all −inf and
    mismatched shapes are refused in flowforge's words."""
    def target(x, c):
        return torch.distributions.Normal(c, 0.5).log_prob(x).sum(-1)

    torch.manual_seed(0)
    flow = NSF(2, num_layers=1, hidden=8, context_dim=2)  # q(x | c) far from p: the weights do the work
    conditions = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    x, log_w = log_weights(flow, target, 20_000, context=conditions, generator=torch.Generator().manual_seed(0))
    draws = resample(x, log_w, 4000, generator=torch.Generator().manual_seed(1))
    assert draws.shape == (4000, 2, 2)
    assert torch.allclose(draws.mean(0), conditions, atol=0.1) and len(torch.unique(draws[:, 0, 0])) > 100
    flat, flat_w = x[:, 0], log_w[:, 0].clone()
    for bad_x, bad_w, words in [(flat[:5], flat_w[:4], "do not match"), (x, flat_w, "do not match"),
                                (flat, torch.where(torch.arange(len(flat_w)) == 3, torch.nan, flat_w), "NaN or +inf"),
                                (flat, torch.full_like(flat_w, -math.inf), "zero weight")]:
        with pytest.raises(FlowforgeError, match=re.escape(words)):
            resample(bad_x, bad_w, 3)
    for count in (np.int64(3), torch.tensor(3)):  # integers of NumPy and torch count as Python's
        assert resample(flat, flat_w, count).shape == (3, 2)
    for bad in (0, True, 2.0, "3", torch.tensor([3, 4]), torch.tensor(True), np.bool_(True)):
        with pytest.raises(FlowforgeError, match="a positive integer"):
            resample(flat, flat_w, bad)


def test_a_target_file_imports_the_modules_beside_it(tmp_path):
    (tmp_path / "posterior_data_beside.py").write_text("CENTRE = 3.0\n")
    (tmp_path / "post.py").write_text("from posterior_data_beside import CENTRE\n\n"
                                      "def log_prob(x):\n    return -0.5 * ((x - CENTRE) ** 2).sum(-1)\n")
    path_before = list(sys.path)
    target = load_target(f"{tmp_path / 'post.py'}:log_prob", 2)
    assert torch.allclose(target(torch.full((1, 2), 3.0)), torch.zeros(1)) and sys.path == path_before


def test_a_one_dimensional_target_fits_with_the_default_model(tmp_path, capsys):
    """NSF couples at least two features: on one the recipe takes its autoregressive form (recorded)."""
    run = fitted_file_target(tmp_path, capsys, "def log_prob(x):\n    return -0.5 * (x ** 2).sum(-1)\n", 1, 200)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["model_options"]["autoregressive"] is True and "data_sha256" not in config
    assert abs(json.loads((run / "results.json").read_text())["log_z"] - 0.5 * math.log(2 * math.pi)) < 0.01
    # a RealNVP was told of `--model-option`, an option fit does not have
    code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / 'target.py'}:log_prob", "--dim", "1", "--model",
                       "realnvp", "--out", tmp_path / "rnvp", *FAST)
    assert code == 1 and "flowforge fit --model nsf` makes it so" in err


def _far_gaussian(x):
    """N((10, 10), I), unnormalised: log Z = log 2π; beyond a spline flow's ±4 at the unit scale."""
    return -0.5 * ((x - 10) ** 2).sum(-1)


def test_the_python_fit_places_an_unplaced_flow_where_the_target_lies_as_the_command_line_does():
    results = {}
    for place in (True, False):
        torch.manual_seed(0)
        flow = NSF(2, num_layers=2, hidden=16, standardize=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FlowforgeWarning)  # the unplaced fit is warned of; not the point here
            results[place] = fit(flow, _far_gaussian, steps=150, place=place)
        if place:
            assert all(abs(v - 10) < 0.5 for v in flow.transform.transforms[0].mean.tolist())
    assert abs(results[True]["log_z"] - math.log(2 * math.pi)) < 0.05 and results[True]["ess_per_draw"] > 0.8
    assert results[False]["ess_per_draw"] < 0.1  # unplaced, q piles up at the splines' edge


@pytest.mark.parametrize("wrap", ["callable", "Target"])
def test_a_users_target_wrapped_or_not_is_placed_in_the_flows_precision(wrap):
    # A Target of the user's own has no known scale (only the built-ins do), so it is searched for;
    # the search hands the target draws of the flow's own dtype (a float64-only target is found too).
    weights = torch.eye(2, dtype=torch.float64)

    def float64_only(x):
        return -0.5 * ((x @ weights - 10) ** 2).sum(-1)  # float32 input raises: mat1 and mat2 dtypes differ

    target = float64_only if wrap == "callable" else Target("mine", 2, float64_only)
    flow = NSF(2, num_layers=1, hidden=8, standardize=True).double()
    placed = place_on_target(flow, target)
    mean = flow.transform.transforms[0].mean
    assert placed is not None and all(abs(v - 10) < 0.5 for v in mean.tolist())
    # in float64 throughout: the search's estimate is not rounded to float32 on its way to the flow
    assert placed[0].dtype == torch.float64 and mean.tolist() == placed[0].tolist()
    assert not torch.equal(placed[0].float().double(), placed[0])
    with pytest.warns(FlowforgeWarning, match="build the flow with standardize=True"):
        place_on_target(NSF(2, num_layers=1, hidden=8).double(), target)


def test_fit_leaves_a_placed_flow_where_it_is_and_warns_of_a_flow_it_cannot_place():
    torch.manual_seed(0)
    flow = NSF(2, num_layers=1, hidden=8, standardize=True)
    set_target_scale(flow, 3.0, 1.0)  # the caller's own placement
    fit(flow, _far_gaussian, steps=2)
    assert flow.transform.transforms[0].std.tolist() == [3.0, 3.0]
    assert flow.transform.transforms[0].mean.tolist() == [1.0, 1.0]
    with pytest.warns(FlowforgeWarning, match="build the flow with standardize=True"):
        fit(NSF(2, num_layers=1, hidden=8), _far_gaussian, steps=2)


def test_a_handful_of_effective_draws_is_warned_of_even_below_the_pareto_threshold():
    from flowforge.variational.diagnostics import warn_if_unreliable

    with pytest.warns(FlowforgeWarning, match="effective sample size is 1.0 of 20000 draws"):
        warn_if_unreliable({"pareto_k": 0.6, "ess_per_draw": 0.5 / 10_000, "draws": 20_000})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unreliable({"pareto_k": 0.6, "ess_per_draw": 0.2, "draws": 20_000})


def test_resampling_judges_its_pool_as_fit_and_eval_do(monkeypatch):
    # sample --resample judged k-hat alone: a handful of effective draws (k-hat can miss it) or a known
    # log Z far off resampled without a word; and a flow of buffers only (no parameters) could not resample
    from flowforge.variational import report

    target = gaussian_target(torch.zeros(2), torch.full((2,), 0.1), 0.0)
    judged = []
    monkeypatch.setattr(report, "run_target", lambda raw, import_target=False: target)
    monkeypatch.setattr(report, "warn_if_unreliable", judged.append)
    flow = affine_flow(torch.zeros(2), torch.full((2,), 10.0))
    assert next(report.resampled_batches(flow, {}, 10, seed=0)).shape == (10, 2)
    assert judged[0]["ess_per_draw"] < 0.01 and judged[0]["true_log_z"] == 0.0 and "pareto_k" in judged[0]


def test_fit_draws_a_file_targets_density_it_has_imported_or_leaves_out_one_that_fails_on_the_grid(tmp_path, capsys,
                                                                                                   monkeypatch):
    from flowforge.variational import figures

    drawn = []
    panels = figures.density_panels
    monkeypatch.setattr(figures, "density_panels", lambda flow, target, *a, **k: drawn.append(target) or
                        panels(flow, target, *a, **k))
    source = "def log_prob(x):\n    if len(x) > 30_000:\n        raise MemoryError('too many points')\n" \
             "    return -0.5 * (x ** 2).sum(-1)\n"
    for name, text in (("fine.py", "def log_prob(x):\n    return -0.5 * (x ** 2).sum(-1)\n"), ("picky.py", source)):
        (tmp_path / name).write_text(text)
        code, _, err = cli(capsys, "fit", "--target", f"{tmp_path / name}:log_prob", "--dim", "2", "--out",
                           tmp_path / name.replace(".py", ""), "--steps", "30", "--layers", "2", "--hidden", "16",
                           "--no-progress")
        assert code == 0 and (tmp_path / name.replace(".py", "") / "plots" / "fit_density.png").is_file(), err
    assert drawn[0] is not None and drawn[0].name.endswith("fine.py:log_prob")  # the panel of the imported target
    assert "raised MemoryError: too many points: the figure leaves the target out" in err
