"""The book's recipe: separate s and t networks, the Keras-style L2 penalty, the recipe as data,
and training in stages."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from flowforge.models import RealNVP
from flowforge.models.recipes import RECIPES
from flowforge.nets import SeparateMLPConditioner
from flowforge.training import TrainConfig, learning_rate, train
from flowforge.training.loop import _Objective
from flowforge.training.regularization import kernels, l2_penalty
from flowforge.training.stages import stage_ends, train_in_stages
from flowforge.transforms import AffineCoupling
from transform_base import TransformTests


class TestSeparateNetworksCoupling(TransformTests):
    shape = (3,)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return AffineCoupling([1, 1, 0], hidden=16, depth=2, context_dim=context_dim, separate_networks=True)


def test_separate_networks_are_two_independent_towers():
    layer = AffineCoupling([1, 0], hidden=8, depth=2, separate_networks=True)
    conditioner = layer.conditioner
    assert isinstance(conditioner, SeparateMLPConditioner)
    with torch.no_grad():  # move only the shift tower: s must not change, t must
        for p in conditioner.shift_net.parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(16, 2)
    raw_s, t = conditioner(x[:, :1]).chunk(2, dim=1)
    assert torch.equal(raw_s, torch.zeros_like(raw_s)) and t.abs().max() > 0
    y, log_det = layer(x)
    assert torch.equal(log_det, torch.zeros_like(log_det))  # s still 0: a pure shift


def test_separate_networks_refuse_the_additive_map():
    with pytest.raises(ValueError, match="affine scale"):
        AffineCoupling([1, 0], hidden=8, depth=1, scale="additive", separate_networks=True)


def test_default_realnvp_keeps_its_weight_names():
    """Old runs load by name: the default (one network) must keep today's keys."""
    names = set(RealNVP(2, num_layers=2, hidden=8, depth=1).state_dict())
    assert any(".conditioner.net." in n for n in names)
    assert not any("scale_net" in n for n in names)


@settings(max_examples=20, deadline=None)
@given(strength=st.floats(1e-4, 10.0), hidden=st.integers(1, 8), depth=st.integers(1, 3))
def test_l2_penalty_is_strength_times_squared_kernels(strength, hidden, depth):
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=2, hidden=hidden, depth=depth, separate_networks=True)
    expected = sum(float(p.detach().square().sum()) for n, p in flow.named_parameters() if n.endswith("weight"))
    assert math.isclose(l2_penalty(flow, strength).item(), strength * expected, rel_tol=1e-5, abs_tol=1e-9)
    assert all(p.dim() == 2 for p in kernels(flow))  # no biases


def test_objective_adds_the_penalty_to_the_nll():
    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=2, hidden=8, depth=2)
    batch = torch.randn(32, 2)
    plain, penalised = _Objective(flow, "mle")(batch), _Objective(flow, "mle", l2=0.5)(batch)
    assert torch.allclose(penalised - plain, l2_penalty(flow, 0.5))


def _kernel_norm(run_dir):
    from safetensors.torch import load_file
    return sum(float(v.square().sum()) for k, v in load_file(run_dir / "model.safetensors").items()
               if k.endswith("weight") and v.dim() == 2)


def test_training_with_l2_shrinks_the_kernels(tmp_path):
    base = dict(steps=60, eval_every=60, n_train=256, batch_size=64, lr=1e-2, weight_decay=0.0, ema_decay=0.0,
                model_options={"num_layers": 2, "hidden": 16, "depth": 2})
    train(TrainConfig(**base), tmp_path / "plain", progress_bar=False)
    train(TrainConfig(**base, l2=1.0), tmp_path / "l2", progress_bar=False)
    assert _kernel_norm(tmp_path / "l2") < 0.5 * _kernel_norm(tmp_path / "plain")


def test_book_recipe_is_a_valid_config_that_round_trips():
    config = TrainConfig(**RECIPES["book"]).validate()
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config
    assert config.steps * config.batch_size >= 300 * config.n_train > (config.steps - 1) * config.batch_size


def test_book_recipe_builds_the_book_model_with_a_constant_lr():
    config = TrainConfig(**RECIPES["book"])
    flow = RealNVP(2, **config.model_options)
    couplings = [layer for layer in flow.modules() if isinstance(layer, AffineCoupling)]
    assert len(couplings) == 2
    assert all(isinstance(c.conditioner, SeparateMLPConditioner) for c in couplings)
    assert {learning_rate(config, step) for step in (0, 1, config.steps // 2, config.steps - 1)} == {config.lr}


def test_old_configs_load_without_l2():
    saved = TrainConfig(steps=10).to_dict()
    del saved["l2"]
    assert TrainConfig.from_dict(saved).l2 == 0.0


@given(steps=st.integers(1, 200), every=st.integers(1, 50))
def test_stage_ends_cover_the_run(steps, every):
    ends = stage_ends(steps, every)
    assert ends[-1] == steps and ends == sorted(set(ends)) and all(b - a <= every for a, b in zip([0] + ends, ends))


def test_staged_training_equals_the_uninterrupted_run(tmp_path):
    config = TrainConfig(steps=12, eval_every=4, n_train=128, batch_size=32, seed=3,
                         model_options={"num_layers": 2, "hidden": 8, "depth": 1})
    whole = train(config, tmp_path / "whole", progress_bar=False)
    stops = [(step, results) for step, _, results in train_in_stages(config, tmp_path / "staged", every=4)]
    assert [step for step, _ in stops] == [4, 8, 12]
    assert stops[-1][1]["test_nll"] == pytest.approx(whole["test_nll"], abs=1e-6)


def test_the_training_curve_legend_says_what_each_curve_is():
    # The book recipe trains on NLL + L2 and evaluates its own weights; the default averages them.
    from flowforge.plots import training_curve

    records = [{"step": 1, "train_nll": 3.0, "val_nll": 2.5}, {"step": 2, "train_nll": 2.0, "val_nll": 2.1}]

    def legend(config):
        return [text.get_text() for text in training_curve(records, config).axes[0].get_legend().get_texts()]

    assert legend(TrainConfig(**RECIPES["book"])) == ["train NLL + L2 penalty (λ = 0.01)", "validation NLL"]
    assert legend(TrainConfig(data="moons", ema_decay=0.995)) == [
        "train NLL", "validation NLL (averaged weights, EMA 0.995)"]
    assert legend(None) == ["train NLL", "validation NLL"]


def test_a_book_run_killed_mid_stage_is_summarised_from_its_best_weights(tmp_path):
    # each stage resumes the run, which removes results.json until the stage ends: a run killed
    # mid-stage has none, and the summary the notebooks are built from read it
    pytest.importorskip("matplotlib")
    from benchmarks.book_recipe import run_book, summarise

    run_book(tmp_path, {"steps": 20, "eval_every": 10, "n_train": 200})
    whole = summarise(tmp_path, tmp_path / "images")
    (tmp_path / "book" / "results.json").unlink()
    killed = summarise(tmp_path, tmp_path / "images")
    assert killed["test_nll"] == pytest.approx(whole["test_nll"], abs=1e-6)
    assert killed["best_step"] == whole["best_step"] and killed["steps_done"] == 20
