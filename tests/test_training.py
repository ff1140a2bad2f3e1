"""The training loop: it learns, it repeats itself under a seed, it resumes exactly, it survives NaNs."""

import json
import math

import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file

from flowforge.errors import FlowforgeError, FlowforgeWarning
from flowforge.training import TrainConfig, learning_rate, load_run, train


def test_training_lowers_nll_and_writes_a_complete_run(trained_run):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [100, 200, 300]
    untrained = 1 + math.log(2 * math.pi)  # N(0, I) on standardised 2-D data, about 2.84
    assert records[-1]["val_nll"] < records[0]["val_nll"] and records[-1]["val_nll"] < untrained - 0.8
    assert {"step", "train_nll", "val_nll", "lr", "time"} <= set(records[0])
    config = json.loads((trained_run / "config.json").read_text())
    assert config["train"]["seed"] == 0 and config["dim"] == 2 and config["versions"]["torch"].startswith("2.13")
    results = json.loads((trained_run / "results.json").read_text())
    assert math.isfinite(results["test_nll"]) and results["best_step"] in (100, 200, 300)
    assert results["test_nll"] < 2.0  # an untrained flow on standardised moons scores about 2.8


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    config = small_config(steps=40, eval_every=20)
    a = train(config, tmp_path / "a", progress_bar=False)
    b = train(config, tmp_path / "b", progress_bar=False)
    c = train(small_config(steps=40, eval_every=20, seed=1), tmp_path / "c", progress_bar=False)
    wa, wb, wc = (load_file(str(tmp_path / n / "model.safetensors")) for n in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a["test_nll"] == b["test_nll"]
    assert c["test_nll"] != a["test_nll"]


@pytest.mark.parametrize("train_noise", [0.0, 0.05])
def test_resume_continues_exactly(tmp_path, train_noise):
    planned = small_config(steps=60, eval_every=20, train_noise=train_noise)
    whole = train(planned, tmp_path / "whole", progress_bar=False)
    partial = train(planned, tmp_path / "split", progress_bar=False, stop_after=20)
    assert partial["steps"] == 20
    resumed = train(planned, tmp_path / "split", resume=True, progress_bar=False)
    for name in ("model.safetensors", "checkpoint.safetensors"):
        w1, w2 = load_file(str(tmp_path / "whole" / name)), load_file(str(tmp_path / "split" / name))
        assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert resumed["test_nll"] == whole["test_nll"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [20, 40, 60]


def test_a_resume_to_more_steps_is_recorded_in_the_runs_config(tmp_path):
    # config.json said steps 300 after --resume --steps 400, and a later resume without --steps
    # went back to 300
    run = tmp_path / "run"
    train(small_config(steps=20, eval_every=10), run, progress_bar=False)
    longer = small_config(steps=40, eval_every=10)
    partial = train(longer, run, resume=True, progress_bar=False, stop_after=30)
    assert partial["steps"] == 30 and json.loads((run / "config.json").read_text())["train"]["steps"] == 40
    assert not (run / "results.json").exists()  # stopped part-way, as a resume killed at step 30
    train(small_config(steps=None, eval_every=10), run, resume=True, progress_bar=False)  # the recorded length
    assert json.loads((run / "results.json").read_text())["steps"] == 40
    with pytest.warns(FlowforgeWarning, match="nothing to continue"):  # a shorter length is not recorded
        train(small_config(steps=10, eval_every=10), run, resume=True, progress_bar=False)
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 40
    assert json.loads((run / "results.json").read_text())["steps"] == 40


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, min_lr_ratio=0.01)
    lrs = [learning_rate(config, s) for s in range(1000)]
    assert lrs[0] < lrs[50] < lrs[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def _poison_after(monkeypatch, step_of_poison):
    """Make the loss NaN from the given optimizer step on, as a blown-up model would."""
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        if calls["n"] == step_of_poison:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def test_nan_with_stop_policy_stops_and_keeps_a_finite_checkpoint(tmp_path, monkeypatch):
    _poison_after(monkeypatch, 25)
    with pytest.raises(FlowforgeError, match="diverged"):
        train(small_config(steps=60, eval_every=20, on_nan="stop"), tmp_path / "r", progress_bar=False)
    flow, _, _ = load_run(tmp_path / "r")  # refuses non-finite weights, so this proves they are finite
    assert all(torch.isfinite(p).all() for p in flow.parameters())


def test_nan_with_rollback_policy_recovers(tmp_path, monkeypatch):
    _poison_after(monkeypatch, 25)
    results = train(small_config(steps=60, eval_every=20), tmp_path / "r", progress_bar=False)
    assert results["nan_events"] == 1 and results["steps"] == 60 and math.isfinite(results["test_nll"])


def test_nan_with_skip_policy_drops_the_step_and_goes_on(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = torch.nn.utils.clip_grad_norm_

    def clip(*args, **kwargs):  # one non-finite gradient norm, as one bad batch would give
        calls["n"] += 1
        norm = original(*args, **kwargs)
        return torch.tensor(float("inf")) if calls["n"] == 30 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    results = train(small_config(steps=60, eval_every=20, on_nan="skip"), tmp_path / "r", progress_bar=False)
    assert results["nan_events"] == 1 and results["steps"] == 60 and math.isfinite(results["test_nll"])


def test_flow_refuses_data_of_the_wrong_shape():
    from flowforge.models import RealNVP

    flow = RealNVP(2, hidden=8, depth=1)
    with pytest.raises(ValueError, match="shape"):
        flow.log_prob(torch.randn(5, 3))
    with pytest.raises(ValueError, match="shape"):
        flow.inverse(torch.randn(5))
    with pytest.raises(ValueError, match="negative"):
        flow.sample(-1)


def test_recipes_fill_what_was_not_given_and_every_builder_option_is_recorded(tmp_path):
    from flowforge.models.specs import DataInfo

    moons = TrainConfig(data="moons").resolved(DataInfo("toy", 3000, (2,)))
    assert moons.model_options["num_layers"] == 12 and moons.model_options["hidden"] == 128
    assert moons.model_options["activation"] == "relu"  # a builder default, recorded too
    assert moons.recipe == "realnvp/toy" and moons.steps == 3000 and moons.train_noise == 0.03
    given = TrainConfig(data="moons", lr=1e-3, model_options={"hidden": 64}).resolved(DataInfo("toy", 3000, (2,)))
    assert given.lr == 1e-3 and given.model_options["hidden"] == 64 and given.model_options["num_layers"] == 12
    glow = TrainConfig(model="glow", data="digits").resolved(DataInfo("image", 1437, (1, 8, 8)))
    assert glow.standardize is False and glow.train_noise == 0.0 and glow.model_options["levels"] >= 1
    table = TrainConfig(data="t.csv").resolved(DataInfo("table", 142, (13,)))
    assert table.patience > 0 and table.eval_every < 10  # evaluated every epoch, stopped early
    assert TrainConfig.from_dict(moons.to_dict()) == moons  # today's format round-trips


def test_format_1_configs_migrate_to_what_they_were_trained_with(tmp_path):
    """A config.json saved before recipes (no config_version) recorded only the options given:
    RealNVP was then built with the book's 6 couplings of 4×256, on the CPU, without early stopping."""
    train(small_config(steps=1, eval_every=1, model_options=dict(num_layers=6, hidden=8, depth=1)),
          tmp_path / "old", progress_bar=False)
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["config_version"]
    for key in ("patience", "device", "dtype", "recipe"):
        del config["train"][key]
    config["train"]["model_options"] = {"hidden": 8, "depth": 1}
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    flow, loaded, _ = load_run(tmp_path / "old")
    assert loaded.model_options == {"num_layers": 6, "hidden": 8, "depth": 1, "scale_bound": 1.0}
    assert (loaded.device, loaded.patience, loaded.recipe) == ("cpu", 0, "format-1")
    assert sum(1 for m in flow.modules() if type(m).__name__ == "AffineCoupling") == 6
    config["config_version"] = 99
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    with pytest.raises(FlowforgeError, match="config_version 99"):
        load_run(tmp_path / "old")


def test_format_3_maf_runs_keep_the_scale_bound_they_were_built_with(tmp_path):
    """Format 3 recorded every MAF option of its day, before scale_bound (then fixed at 1): such a run
    loads with bound 1; a new run records its bound."""
    from flowforge.transforms import Affine

    options = dict(num_layers=2, hidden=8, depth=1, scale_bound=3.0)
    train(small_config(model="maf", steps=2, eval_every=1, model_options=options), tmp_path / "maf", progress_bar=False)
    config = json.loads((tmp_path / "maf" / "config.json").read_text())
    assert config["train"]["model_options"]["scale_bound"] == 3.0
    _, fresh, _ = load_run(tmp_path / "maf")
    assert fresh.model_options["scale_bound"] == 3.0
    config["config_version"] = 3
    del config["train"]["model_options"]["scale_bound"]
    (tmp_path / "maf" / "config.json").write_text(json.dumps(config))
    old, loaded, _ = load_run(tmp_path / "maf")
    assert loaded.model_options["scale_bound"] == 1.0
    assert {m.bound for m in old.modules() if isinstance(m, Affine)} == {1.0}


def test_train_noise_defaults_and_bad_values(tmp_path):
    from flowforge.models.specs import DataInfo

    moons = TrainConfig(data="moons").resolved(DataInfo("toy", 3000, (2,)))
    digits = TrainConfig(model="glow", data="digits").resolved(DataInfo("image", 1437, (1, 8, 8)))
    assert moons.train_noise == 0.03 and digits.train_noise == 0.0
    older = {k: v for k, v in moons.to_dict().items() if k != "train_noise"}
    # a run saved before the option (format 1) trained without noise
    assert TrainConfig.from_dict(older, version=1).train_noise == 0.0
    assert train(small_config(steps=20, eval_every=20, train_noise=0.0), tmp_path / "plain",
                 progress_bar=False)["test_nll"] != train(small_config(steps=20, eval_every=20, train_noise=0.05),
                                                           tmp_path / "noisy", progress_bar=False)["test_nll"]
    with pytest.raises(FlowforgeError, match="--train-noise must be"):
        train(small_config(train_noise=1.5), tmp_path / "bad", progress_bar=False)
    with pytest.raises(FlowforgeError, match="vector data"):
        train(TrainConfig(model="glow", data="digits", steps=1, train_noise=0.1,
                          model_options=dict(levels=1, steps=1, hidden=8, bits=4)), tmp_path / "img", progress_bar=False)
    assert not (tmp_path / "img").exists()  # refused before anything was written


def test_train_noise_has_the_asked_spread(monkeypatch, tmp_path):
    # The batches the model sees differ from the rows drawn by N(0, (noise · std)²) per feature.
    from flowforge.training import loop

    seen = []
    original = loop._Objective.forward
    monkeypatch.setattr(loop._Objective, "forward", lambda self, batch: seen.append(batch) or original(self, batch))
    config = small_config(steps=4, eval_every=4, train_noise=0.1, batch_size=2048)
    train(config, tmp_path / "run", progress_bar=False)
    data = torch.from_numpy(loop.load_splits("moons", 0, config.n_train).train)
    replay = torch.Generator().manual_seed(config.seed)  # the trainer's batch generator: indices, then noise
    noise = []
    for batch in seen[:4]:
        rows = data[torch.randint(len(data), (config.batch_size,), generator=replay)]
        torch.randn(rows.shape, generator=replay)
        noise.append((batch - rows) / data.std(0))
    spread = torch.cat(noise).std(0)
    assert torch.allclose(spread, torch.full((2,), 0.1), rtol=0.05), spread
    assert abs(float(torch.cat(noise).mean())) < 0.01


def test_existing_run_is_not_overwritten_without_force(trained_run, tmp_path):
    with pytest.raises(FlowforgeError, match="already holds a run"):
        train(small_config(steps=5), trained_run, progress_bar=False)


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(FlowforgeError):
        train(small_config(on_nan="ignore"), tmp_path / "r", progress_bar=False)
    with pytest.raises(FlowforgeError, match="model 'realnvp' has no option colour; its options: activation"):
        train(small_config(model_options={"hidden": 8, "colour": "red"}), tmp_path / "r", progress_bar=False)


def test_training_flushes_subnormal_floats_and_restores_the_default():
    # CPU arithmetic on subnormal weights (left by an L2 penalty on dead ReLU units) measured 40x slower
    from flowforge.training.device import denormals_flushed

    tiny = torch.tensor([1e-40], dtype=torch.float32)
    with denormals_flushed():
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) != 0.0


def test_train_given_an_array_says_what_to_do_without_printing_its_numbers(tmp_path):
    from flowforge.errors import FlowforgeError
    from flowforge.training import train
    from flowforge.training.config import TrainConfig

    with pytest.raises(FlowforgeError, match=r"got a Tensor of shape \(500, 3\); for rows in memory, save them") as err:
        train(TrainConfig(data=torch.randn(500, 3)), tmp_path / "run")
    assert "tensor(" not in str(err.value) and not (tmp_path / "run").exists()
