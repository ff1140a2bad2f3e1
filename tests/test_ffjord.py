"""FFJORD: the CNF transform, its divergence estimators, its objectives, the trainer and the CLI."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transform_base import TransformTests

from flowforge.cli import main
from flowforge.distributions import StandardNormal
from flowforge.errors import FlowforgeError
from flowforge.models import FFJORD, CNFFlow, build_model
from flowforge.models.flow_matching import flow_matching_loss, ot_pairing
from flowforge.training import TrainConfig, load_run, train
from flowforge.training.evaluate import log_prob as evaluate_log_prob
from flowforge.transforms import Compose, Standardize
from flowforge.transforms.cnf import CNF
from flowforge.transforms.divergence import exact_divergence, hutchinson_divergence, sample_noise
from flowforge.transforms.dynamics import ConcatSquashMLP

TIGHT = dict(atol=1e-12, rtol=1e-12)  # float64 solves accurate to ~1e-11
LOOSE = dict(atol=1e-6, rtol=1e-6)  # what float32 can resolve


@pytest.fixture(autouse=True)
def one_thread():
    """ODE solves are thousands of tiny ops: a second thread only adds contention (50× slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Move the parameters away from the identity start, as the shared transform tests do."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


class LinearVelocity(nn.Module):
    """f(z, t) = A z: the flow map over time s is expm(sA) and log|det| = s·Tr A."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.matrix = nn.Parameter(matrix.clone())

    def forward(self, t, z):
        return z @ self.matrix.T


class GaussianPathVelocity(nn.Module):
    """The marginal velocity E[x - z | x_t] of the straight path x_t = (1-t) z + t x with
    z ~ N(0, I), x ~ N(μ, σ²I): μ + c(t)(x_t - tμ), c(t) = (tσ² - (1-t)) / ((1-t)² + t²σ²).
    ``flip`` runs time backwards (the velocity of the opposite convention)."""

    def __init__(self, mu: torch.Tensor, sigma: float, flip: bool = False):
        super().__init__()
        self.register_buffer("mu", mu)
        self.sigma, self.flip = sigma, flip

    def forward(self, t, z):
        t = (1 - t if self.flip else t).reshape(-1, 1)
        c = (t * self.sigma**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * self.sigma**2)
        return self.mu + c * (z - t * self.mu)


# (a) the shared transform checks, in float64 at atol = rtol = 1e-12 (they meet the base's 1e-9).

class TestCNFTransform(TransformTests):
    shape = (2,)
    context_dims = (0, 3)

    def make(self, context_dim=0, tolerances=TIGHT):
        return CNF(ConcatSquashMLP(2, hidden=16, depth=2, context_dim=context_dim), **tolerances)

    def make_for_float32(self, context_dim=0):
        return self.make(context_dim, LOOSE)


class TestCNFTwoBlocks(TransformTests):
    shape = (3,)

    def make(self, context_dim=0, tolerances=TIGHT):
        return CNF([ConcatSquashMLP(3, hidden=8, depth=1, activation="softplus") for _ in range(2)],
                   time=0.5, **tolerances)

    def make_for_float32(self, context_dim=0):
        return self.make(context_dim, LOOSE)


# (b) linear dynamics: closed forms.

def linear_cnf(matrix, time=1.0, **options) -> CNF:
    return CNF(LinearVelocity(matrix), time=time, **{**TIGHT, **options}).double()


def test_linear_dynamics_match_matrix_exponential():
    a = torch.tensor([[0.3, -0.8], [0.5, -0.2]], dtype=torch.float64)
    cnf = linear_cnf(a, time=1.5)
    z = torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        x, inverse_lad = cnf.inverse(z)   # latent → data: z(T) = expm(TA) z(0)
        z_back, forward_lad = cnf(x)
    assert torch.allclose(x, z @ torch.linalg.matrix_exp(1.5 * a).T, atol=1e-10)
    assert torch.allclose(inverse_lad, torch.full((6,), 1.5 * float(a.trace()), dtype=torch.float64), atol=1e-10)
    assert torch.allclose(forward_lad, -inverse_lad, atol=1e-10)
    assert torch.allclose(z_back, z, atol=1e-10)


def test_linear_dynamics_log_prob_is_the_analytic_gaussian():
    # x = M z with M = expm(A) and z ~ N(0, I), so x ~ N(0, M Mᵀ).
    a = torch.tensor([[0.4, 0.7], [-0.3, -0.6]], dtype=torch.float64)
    flow = CNFFlow(Compose([linear_cnf(a)]), StandardNormal(2).double())
    m = torch.linalg.matrix_exp(a)
    truth = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), m @ m.T)
    x = torch.randn(50, 2, dtype=torch.float64)
    assert torch.allclose(flow.log_prob(x), truth.log_prob(x), atol=1e-9)


def test_penalties_of_linear_dynamics_have_closed_forms():
    # Along z(t) = e^{a(t-T)} x (diagonal A), ∫₀ᵀ‖Az‖² dt = Σ a x² (1 - e^{-2aT}) / 2; ‖A‖²_F is constant.
    a = torch.tensor([0.5, -0.9], dtype=torch.float64)
    cnf = linear_cnf(torch.diag(a), time=1.2)
    x = torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        out = cnf.integrate(x, cnf.total_time, 0.0, penalties=True)
    kinetic = (a * x**2 * (1 - torch.exp(-2 * a * 1.2)) / 2).sum(dim=1)
    assert torch.allclose(out.kinetic, kinetic, atol=1e-9)
    assert torch.allclose(out.jacobian, torch.full((4,), 1.2 * float((a**2).sum()), dtype=torch.float64), atol=1e-9)


# (c) Hutchinson's estimator is unbiased, for the trace and for the squared Frobenius norm.

@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_estimator_is_unbiased(noise):
    velocity = perturbed(ConcatSquashMLP(3, hidden=16, depth=2)).double()
    points, draws = torch.randn(4, 3, dtype=torch.float64), 20_000
    z = points.repeat_interleave(draws, dim=0).requires_grad_(True)
    f = velocity(torch.tensor(0.4, dtype=torch.float64), z)
    torch.manual_seed(1)
    trace, frobenius = hutchinson_divergence(f, z, sample_noise(z, noise))
    exact_trace, exact_frobenius = exact_divergence(f, z)
    for estimate, exact in ((trace, exact_trace), (frobenius, exact_frobenius)):
        estimate, exact = estimate.view(4, draws), exact.view(4, draws)[:, 0]
        stderr = estimate.std(dim=1) / math.sqrt(draws)
        assert (stderr > 0).all()  # a real estimator, not the exact value in disguise
        assert ((estimate.mean(dim=1) - exact).abs() < 5 * stderr).all()


def test_hutchinson_averaged_over_every_sign_vector_is_exact():
    # The mean over all 2^D vectors ε ∈ {±1}^D is the Rademacher expectation itself: no sampling error.
    velocity = perturbed(ConcatSquashMLP(3, hidden=16, depth=2)).double()
    signs = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * 3)  # (8, 3)
    z = torch.randn(4, 3, dtype=torch.float64).repeat_interleave(len(signs), dim=0).requires_grad_(True)
    f = velocity(torch.tensor(0.4, dtype=torch.float64), z)
    trace, frobenius = hutchinson_divergence(f, z, signs.repeat(4, 1))
    exact_trace, exact_frobenius = exact_divergence(f, z)
    assert torch.allclose(trace.view(4, 8).mean(dim=1), exact_trace.view(4, 8)[:, 0], atol=1e-12)
    assert torch.allclose(frobenius.view(4, 8).mean(dim=1), exact_frobenius.view(4, 8)[:, 0], atol=1e-12)
    assert trace.view(4, 8).std(dim=1).min() > 1e-3  # single draws do differ from the trace


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_noise_has_zero_mean_and_identity_covariance(noise):
    torch.manual_seed(0)
    eps = sample_noise(torch.empty(200_000, 3), noise)
    assert eps.mean(dim=0).abs().max() < 0.01
    assert (eps.T @ eps / len(eps) - torch.eye(3)).abs().max() < 0.02
    if noise == "rademacher":
        assert set(eps.unique().tolist()) == {-1.0, 1.0}


def test_hutchinson_only_while_training_with_gradients():
    flow = perturbed(FFJORD(2, hidden=16, depth=2, trace="hutchinson", atol=1e-8, rtol=1e-8)).double()
    x = torch.randn(1, 2, dtype=torch.float64).repeat(4000, 1)
    flow.eval()
    exact = flow.log_prob(x)
    flow.train()
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(x), exact, atol=1e-12)   # no gradients: exact
    torch.manual_seed(0)
    stochastic = flow.log_prob(x).detach()                            # training: one ε per row
    assert stochastic.std() > 1e-3
    stderr = stochastic.std() / math.sqrt(len(stochastic))
    assert abs(stochastic.mean() - exact[0]) < 5 * stderr


# (d) sampling and evaluating agree.

def test_sample_and_log_prob_agree_with_log_prob():
    flow = perturbed(FFJORD(2, hidden=16, depth=2, num_layers=2, atol=1e-10, rtol=1e-10)).double()
    flow.eval()
    x, lp = flow.sample_and_log_prob(20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lp, flow.log_prob(x), atol=1e-7)
    assert torch.allclose(flow.sample(20, generator=torch.Generator().manual_seed(0)), x)


def test_log_prob_inside_inference_mode_matches_no_grad():
    flow = perturbed(FFJORD(2, hidden=16, depth=2, standardize=True))
    flow.transform.transforms[0].set_statistics(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0]))
    x = torch.randn(64, 2)
    with torch.no_grad():
        expected = flow.log_prob(x)
    with torch.inference_mode():
        got = flow.log_prob(x)
        assert not got.requires_grad
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(evaluate_log_prob(flow, x.numpy()), expected, atol=1e-6)
    assert all(p.grad is None for p in flow.parameters())  # evaluation left no gradients behind


def test_builder_puts_standardize_first_and_validates_options():
    flow = build_model("ffjord", 3, standardize=True, hidden=8, depth=1)
    assert isinstance(flow, CNFFlow) and isinstance(flow.transform.transforms[0], Standardize)
    assert isinstance(flow.transform.transforms[-1], CNF)
    for bad in (dict(trace="stochastic"), dict(noise="uniform"), dict(solver="leapfrog"), dict(atol=0),
                dict(kinetic=-1.0), dict(num_layers=0), dict(activation="sine")):
        with pytest.raises(ValueError):
            FFJORD(2, **bad)


# (e) objectives and gradients.

def test_unknown_objective_is_a_flowforge_error():
    with pytest.raises(FlowforgeError, match="flow-matching"):
        FFJORD(2, hidden=8, depth=1).training_loss(torch.randn(4, 2), "score-matching")


def test_flow_matching_target_matches_the_sampling_direction():
    # The exact marginal velocity of the straight path carries N(0, I) at t=0 to N(μ, σ²I) at t=T,
    # so the CNF built on it has exactly that density, and it beats the time-reversed field on the loss.
    mu, sigma = torch.tensor([2.0, -1.0], dtype=torch.float64), 0.5
    truth = torch.distributions.Independent(torch.distributions.Normal(mu, sigma), 1)
    true_flow = CNFFlow(CNF(GaussianPathVelocity(mu, sigma), **TIGHT), StandardNormal(2).double())
    x = truth.sample((200,))
    assert torch.allclose(true_flow.log_prob(x), truth.log_prob(x), atol=1e-8)

    data = truth.sample((20_000,))
    losses = {}
    for flip in (False, True):
        torch.manual_seed(3)  # the same z and t for both fields
        losses[flip] = float(flow_matching_loss(CNF(GaussianPathVelocity(mu, sigma, flip)), data))
    assert losses[False] < 0.5 * losses[True]


def test_ot_pairing_is_the_cheapest_assignment():
    generator = torch.Generator().manual_seed(0)
    z, x = torch.randn(6, 2, generator=generator), torch.randn(6, 2, generator=generator) + 1.0

    def cost(p) -> float:
        return float(((z[list(p)] - x) ** 2).sum())
    best = min(cost(p) for p in itertools.permutations(range(6)))   # brute force over all 720 pairings
    pairing = ot_pairing(z, x)
    assert sorted(pairing.tolist()) == list(range(6)) and cost(pairing.tolist()) == pytest.approx(best, abs=1e-9)


class TimeRecorder(nn.Module):
    """f = 0, remembering the times it was asked about."""

    def forward(self, t, z):
        self.times = t.detach().clone()
        return torch.zeros_like(z)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_flow_matching_times_have_the_stated_density(power):
    recorder = TimeRecorder()
    torch.manual_seed(0)
    flow_matching_loss(CNF(recorder, time=2.0), torch.randn(20_000, 2), time_power=power)
    s = recorder.times / 2.0   # fractions of the block's time
    assert 0 <= s.min() and s.max() <= 1
    # density p·s^(p-1): CDF s^p, so s^p is uniform; the mean of s is p/(p+1)
    assert float(s.mean()) == pytest.approx(power / (power + 1), abs=0.01)
    for q in (0.25, 0.5, 0.75):
        assert float((s.pow(power) <= q).double().mean()) == pytest.approx(q, abs=0.015)


def test_ffjord_flow_matching_uses_its_time_power():
    recorder = TimeRecorder()
    flow = CNFFlow(Compose([CNF(recorder)]), StandardNormal(2), fm_time_power=3.0)
    torch.manual_seed(0)
    flow.training_loss(torch.randn(20_000, 2), "flow-matching")
    assert float(recorder.times.mean()) == pytest.approx(3 / 4, abs=0.01)
    assert FFJORD(2).fm_time_power == CNFFlow(Compose([CNF(recorder)]), StandardNormal(2)).fm_time_power == 2.0


def test_runs_saved_before_the_time_power_resume_with_uniform_times():
    from flowforge.models.specs import DataInfo

    pinwheel = DataInfo("toy", 3000, (2,))
    new = TrainConfig(model="ffjord", objective="flow-matching").resolved(pinwheel)
    assert new.model_options["fm_time_power"] == 2.0            # recorded in config.json
    assert TrainConfig.from_dict(new.to_dict()).model_options["fm_time_power"] == 2.0
    old = {k: v for k, v in new.to_dict().items()}
    old["model_options"] = {"hidden": 16}                        # a format-1 config.json from before the option
    assert TrainConfig.from_dict(old, version=1).model_options == {"fm_time_power": 1.0, "hidden": 16, "whiten": False}
    assert "fm_time_power" not in TrainConfig(model="realnvp").resolved(pinwheel).model_options


@pytest.mark.parametrize("power", [0.0, -1.0, math.inf, True, "2"])
def test_bad_time_power_is_refused(power):
    with pytest.raises(ValueError, match="time power must be a finite positive number"):
        FFJORD(2, fm_time_power=power)


def test_unknown_flow_matching_coupling_is_refused():
    with pytest.raises(ValueError, match="coupling 'sinkhorn'"):
        FFJORD(2, fm_coupling="sinkhorn")


def test_flow_matching_on_two_blocks_routes_each_time_to_its_block():
    cnf = CNF([LinearVelocity(torch.eye(2)), LinearVelocity(-torch.eye(2))], time=0.5)
    z, t = torch.ones(4, 2), torch.tensor([0.1, 0.4, 0.6, 0.9])
    assert torch.equal(cnf.velocity(t, z)[:, 0], torch.tensor([1.0, 1.0, -1.0, -1.0]))
    assert torch.equal(cnf.velocity(torch.tensor(0.7), z), -z)


def test_penalized_hutchinson_loss_has_gradients():
    flow = perturbed(FFJORD(2, hidden=16, depth=2, trace="hutchinson", noise="rademacher",
                            kinetic=0.1, jacobian=0.1))
    x = torch.randn(32, 2)
    torch.manual_seed(0)
    plain = FFJORD(2, hidden=16, depth=2, trace="hutchinson", noise="rademacher")
    plain.load_state_dict(flow.state_dict())
    torch.manual_seed(0)
    penalized_loss = flow.training_loss(x, "mle")
    penalized_loss.backward()
    torch.manual_seed(0)
    assert float(penalized_loss.detach()) > float(plain.training_loss(x, "mle").detach())  # the penalties are positive
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_adjoint_gradients_match_backpropagation():
    x = torch.randn(8, 2, dtype=torch.float64)
    grads, nfe = {}, {}
    for adjoint in (False, True):
        torch.manual_seed(0)  # the same initial weights for both
        flow = perturbed(FFJORD(2, hidden=8, depth=2, adjoint=adjoint, atol=1e-10, rtol=1e-10,
                                kinetic=0.5, jacobian=0.5)).double()
        flow.training_loss(x, "mle").backward()
        grads[adjoint] = torch.cat([p.grad.flatten() for p in flow.parameters()])
        nfe[adjoint] = flow.training_metrics()
    assert torch.allclose(grads[True], grads[False], atol=1e-6)
    for counts in nfe.values():
        assert counts["nfe_forward"] > 0 and counts["nfe_backward"] > 0 and counts["nfe_steps"] == 1


def test_fixed_step_solver_counts_its_steps():
    flow = perturbed(FFJORD(2, hidden=8, depth=1, solver="rk4", solver_steps=5))
    with torch.no_grad():
        flow.log_prob(torch.randn(3, 2))
    assert flow.training_metrics()["nfe_eval"] == 5 * 4  # rk4: 4 evaluations per step


# (e), (f) the trainer: both objectives, NFE in metrics.jsonl, the trained run in inference mode.

def tiny_config(objective: str, **options) -> TrainConfig:
    return TrainConfig(model="ffjord", objective=objective, data="moons", n_train=200, steps=6,
                       batch_size=64, lr=1e-2, eval_every=3, warmup_steps=0,
                       model_options=dict(hidden=16, depth=2, **options))


@pytest.mark.parametrize("objective, options", [("mle", {}), ("flow-matching", {}),
                                                ("flow-matching", {"fm_coupling": "ot"})])
def test_trains_through_the_trainer_and_logs_nfe(objective, options, tmp_path):
    results = train(tiny_config(objective, **options), tmp_path / "run", progress_bar=False)
    assert math.isfinite(results["test_nll"]) and results["steps"] == 6

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    for r in records:
        assert r["nfe_steps"] == 3 and r["nfe_eval"] > 0      # validation solved the ODE
        if objective == "mle":
            assert r["nfe_forward"] > 0 and r["nfe_backward"] > 0
        else:  # simulation-free: no solve while training
            assert r["nfe_forward"] == r["nfe_backward"] == 0

    flow, _, _ = load_run(tmp_path / "run")
    x = torch.randn(16, 2)
    with torch.inference_mode():
        inference = flow.log_prob(x)
    with torch.no_grad():
        assert torch.allclose(inference, flow.log_prob(x), atol=1e-6)
    assert torch.isfinite(inference).all()
    untrained = build_model("ffjord", 2, standardize=True, hidden=16, depth=2)
    assert not torch.allclose(flow.cnf.velocities[0].output.linear.weight,
                              untrained.cnf.velocities[0].output.linear.weight)  # training moved the weights


GAUSSIAN_NLL = 1 + math.log(2 * math.pi)  # the NLL of standardised 2-D data under N(0, I): the untrained flow's


def test_flow_matching_learns_eight_gaussians(tmp_path):
    config = TrainConfig(model="ffjord", objective="flow-matching", data="8gaussians", steps=1000, lr=3e-3,
                         eval_every=1000, model_options=dict(hidden=32, depth=2))
    assert train(config, tmp_path / "run", progress_bar=False)["test_nll"] < GAUSSIAN_NLL - 0.6  # measured 1.81


@pytest.mark.slow
def test_maximum_likelihood_learns_eight_gaussians(tmp_path):
    config = TrainConfig(model="ffjord", objective="mle", data="8gaussians", steps=300, lr=3e-3,
                         eval_every=300, model_options=dict(hidden=32, depth=2))
    assert train(config, tmp_path / "run", progress_bar=False)["test_nll"] < GAUSSIAN_NLL - 0.6  # measured 1.86


# (g) the command line, and the continuous flow's figures.

def test_cli_trains_and_evaluates_ffjord(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "ffjord", "--data", "pinwheel", "--objective", "flow-matching",
                 "--steps", "20", "--eval-every", "10", "--n-train", "500", "--model-option", "hidden=16",
                 "--model-option", "depth=2", "--model-option", "solver=rk4", "--model-option", "solver_steps=8",
                 "--no-progress", "--no-plots", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert np.isfinite(report["nll"]) and report["n"] == 10_000
    assert report["nfe"] == 2 * 8 * 4  # two batches of at most 8,192 points, 8 rk4 steps of 4 evaluations
    assert main(["plot", str(out)]) == 0
    for name in ("density_over_time.png", "trajectories.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / "plots" / "trajectories.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames > 10
    assert main(["train", "--model", "ffjord", "--objective", "adversarial", "--steps", "2", "--no-progress",
                 "--no-plots", "--out", str(tmp_path / "bad")]) == 1
    assert "not 'adversarial'" in capsys.readouterr().err


# ---- conditional continuous flows ---------------------------------------------------------------

def conditional_ffjord(**options):
    torch.manual_seed(0)
    flow = FFJORD(2, hidden=16, depth=2, context_dim=3, **options)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow


def test_flow_matching_with_a_context_trains_the_conditional_field():
    flow = conditional_ffjord()
    x, context = torch.randn(64, 2), torch.randn(64, 3)
    loss = flow.training_loss(x, "flow-matching", context=context)
    loss.backward()
    first = flow.cnf.velocities[0].hidden_layers[0].linear.weight
    assert torch.isfinite(loss) and first.grad[:, 2:].abs().sum() > 0  # the context's columns learn
    with pytest.raises(ValueError, match="across conditions"):
        flow.fm_coupling = "ot"
        flow.training_loss(x, "flow-matching", context=context)


def test_flow_matching_starts_from_the_flows_own_base():
    from flowforge.distributions import DiagonalNormal

    flow = FFJORD(2, hidden=8, depth=1)
    shifted = CNFFlow(flow.transform, DiagonalNormal(2, loc=3.0, learned=False))
    x = torch.randn(32, 2)
    torch.manual_seed(1)
    loss = shifted.training_loss(x, "flow-matching")
    torch.manual_seed(1)
    noise = shifted.base.sample(32)
    assert torch.equal(loss, flow_matching_loss(shifted.cnf, x, "independent", shifted.fm_time_power, noise=noise))
    assert noise.mean() > 2  # drawn around the base's mean, not N(0, I)


def test_conditional_cnf_paths_take_the_context():
    flow = conditional_ffjord().eval()
    x, context = torch.randn(6, 2), torch.randn(6, 3)
    end = flow.marginal_log_prob(x, flow.cnf.total_time, context)
    assert torch.allclose(end, flow.log_prob(x, context), atol=1e-4)
    assert not torch.allclose(end, flow.log_prob(x, torch.randn(6, 3)), atol=1e-4)
    paths = flow.trajectory(torch.randn(6, 2), [0.0, 0.5, 1.0], context)
    assert paths.shape == (3, 6, 2)


def test_the_adjoint_solve_gives_a_context_its_gradient():
    direct, adjoint = conditional_ffjord(solver="rk4", solver_steps=8), conditional_ffjord(solver="rk4", solver_steps=8,
                                                                                          adjoint=True)
    x = torch.randn(5, 2)
    grads = []
    for flow in (direct, adjoint):
        context = torch.randn(5, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        flow.log_prob(x, context).sum().backward()
        grads.append(context.grad)
    assert grads[1] is not None and torch.allclose(grads[0], grads[1], atol=1e-5)


def test_likelihood_only_options_are_refused_for_a_flow_matching_run(tmp_path, capsys):
    # the docs' own command trained by flow matching, ignored trace/kinetic/jacobian and recorded them
    from flowforge.models.specs import spec_of

    code = main(["train", "--model", "ffjord", "--data", "8gaussians", "--steps", "5", "--model-option",
                 "trace=hutchinson", "--model-option", "kinetic=0.01", "--out", str(tmp_path / "fm")])
    err = capsys.readouterr().err
    assert code == 1 and "trace=hutchinson, kinetic=0.01: ffjord uses them only when it trains by mle" in err
    assert not (tmp_path / "fm").exists()
    ffjord = spec_of("ffjord")
    assert ffjord.idle_options("mle", {"trace": "hutchinson", "kinetic": 0.01}) == {}
    assert ffjord.idle_options("flow-matching", {"trace": "exact", "kinetic": 0.0}) == {}  # defaults: nothing set
