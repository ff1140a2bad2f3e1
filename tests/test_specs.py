"""Model specs and recipes, device and dtype, the Gaussian baseline, a table's column names, and a
command line that answers --help without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_harness import SMALL, cli
from conftest import small_config
from safetensors.torch import load_file

from flowforge.models import SPECS, build_model
from flowforge.models.specs import NATURAL_DATA, DataInfo
from flowforge.training import TrainConfig, load_run, train
from flowforge.training import loop

KINDS = {"vector": [DataInfo("toy", 3000, (2,)), DataInfo("table", 142, (13,)), DataInfo("table", 30_000, (43,))],
         "image": [DataInfo("image", 1437, (1, 8, 8)), DataInfo("image", 60_000, (1, 28, 28))]}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_recipe_resolves_to_a_valid_config_that_builds(name):
    spec = SPECS[name]
    for info in KINDS[spec.input_kind]:
        config = TrainConfig(model=name, data="digits" if spec.images else "moons").resolved(info).validate()
        assert None not in (config.steps, config.lr, config.batch_size, config.eval_every, config.objective)
        assert config.objective in spec.objectives and config.recipe == f"{name}/{info.kind}"
        options = {k: v for k, v in config.model_options.items() if k != "bits"}
        dim = info.shape if spec.images else info.shape[0]
        standardize = {} if spec.images else {"standardize": config.standardize}  # as the trainer builds it
        assert sum(p.numel() for p in build_model(name, dim, **standardize, **options).parameters()) > 0
        assert config.model_options.keys() >= spec.builder_options().keys()  # all recorded
        assert "standardize" not in spec.builder_options()  # a trainer field of its own


def test_the_size_flags_reach_each_model_under_its_own_name_or_are_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--model", "glow", "--data", "digits", "--layers", "2", "--hidden", "8",
                       "--depth", "1", "--model-option", "levels=1", "--steps", "2", "--eval-every", "2",
                       "--out", str(tmp_path / "g"), "--no-plots", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "g" / "config.json").read_text())["train"]["model_options"]["steps"] == 2


def test_cpu_float64_reaches_parameters_optimiser_batches_and_saved_weights(tmp_path, monkeypatch):
    seen = []
    draw = loop.draw_batch
    monkeypatch.setattr(loop, "draw_batch", lambda *a: seen.append(draw(*a)) or seen[-1])
    config = small_config(steps=4, eval_every=2, device="cpu", dtype="float64")
    train(config, tmp_path / "f64", progress_bar=False)
    assert seen and all(b.dtype == torch.float64 and b.device.type == "cpu" and c is None for b, c in seen)
    weights = load_file(str(tmp_path / "f64" / "model.safetensors"))
    assert {t.dtype for k, t in weights.items() if t.is_floating_point() and "bf16" not in k} == {torch.float64}
    checkpoint = load_file(str(tmp_path / "f64" / "checkpoint.safetensors"))
    assert all(t.dtype == torch.float64 for k, t in checkpoint.items() if k.startswith("optim.") and
               k.endswith(("exp_avg", "exp_avg_sq")))
    flow, loaded, _ = load_run(tmp_path / "f64")
    assert loaded.dtype == "float64" and next(flow.parameters()).dtype == torch.float64


def test_an_unknown_or_absent_device_is_one_line(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--device", "tpu", "--steps", "2", "--out", str(tmp_path / "a"), *SMALL)
    assert code == 1 and err.count("\n") == 1 and "--device" in err
    if not torch.cuda.is_available():
        code, _, err = cli(capsys, "train", "--device", "cuda", "--steps", "2", "--out", str(tmp_path / "b"), *SMALL)
        assert code == 1 and "no CUDA device" in err


def test_train_leaves_early_and_keeps_the_best_weights_when_validation_stops_improving(tmp_path):
    results = train(small_config(steps=2000, eval_every=1, patience=3, lr=0.5, on_nan="skip"), tmp_path / "p",
                    progress_bar=False)
    assert results["steps"] < 2000 and results["best_step"] <= results["steps"]


def _write_table(path, rows: np.ndarray, names: list[str]) -> None:
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows) + "\n")


def test_a_table_reports_the_gaussian_baseline_and_samples_keep_its_column_names(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 3))
    x[:, 2] = x[:, 0] ** 2 + 0.1 * x[:, 2]  # not Gaussian: a flow can beat the fitted Gaussian
    _write_table(tmp_path / "t.csv", x, ["alcohol", "malic acid", "ash"])
    code, out, err = cli(capsys, "train", "--data", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"),
                         "--steps", "300", "--no-plots", "--no-progress")
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_gaussian_nll"] > 0 and "full-covariance Gaussian" in out
    code, _, err = cli(capsys, "sample", str(tmp_path / "run"), "-n", "5", "-o", str(tmp_path / "s.csv"))
    assert code == 0, err
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "alcohol,malic acid,ash"


def test_a_constant_or_integer_column_is_named_in_a_warning(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.standard_normal(200), np.full(200, 3.0), rng.integers(0, 3, 200)])
    _write_table(tmp_path / "flat.csv", x, ["a", "flat", "count"])
    code, _, err = cli(capsys, "train", "--data", str(tmp_path / "flat.csv"), "--out", str(tmp_path / "r1"),
                       "--steps", "5", "--eval-every", "5", *SMALL)
    assert code == 1 and err.count("\n") == 1 and "'flat' is constant" in err
    assert not (tmp_path / "r1").exists()
    _write_table(tmp_path / "count.csv", x[:, [0, 2]], ["a", "count"])
    code, _, err = cli(capsys, "train", "--data", str(tmp_path / "count.csv"), "--out", str(tmp_path / "r2"),
                       "--steps", "5", "--eval-every", "5", *SMALL)
    assert code == 0 and "'count' holds only 3 integer values" in err


def test_table_recipes_follow_the_rows_and_the_family():
    """Noise by the rows (none from 5,000 rows on), MAF's own learning rate from 5,000 rows on and its
    book scale bound on the 2-D sets."""
    def resolved(model, rows):
        return TrainConfig(data="t.csv", model=model).resolved(DataInfo("table", rows, (8,)))

    assert [resolved("nsf", n).train_noise for n in (142, 1_000, 2_955, 9_000)] == [0.3, 0.1, 0.03, 0.0]
    assert resolved("maf", 9_000).lr == 2e-3 and resolved("nsf", 9_000).lr == resolved("maf", 2_955).lr == 7e-4
    assert resolved("maf", 142).lr == resolved("nsf", 142).lr == 3e-3
    assert resolved("maf", 142).model_options["scale_bound"] == 3.0  # the builder's default on tables
    toy = TrainConfig(data="moons", model="maf").resolved(DataInfo("toy", 3000, (2,)))
    assert toy.model_options["scale_bound"] == 1.0 and "scale_bound" not in SPECS["nsf"].recipe(DataInfo("toy", 3000, (2,)))["model_options"]
    # FFJORD: flow matching at a table's learning rate did not beat the fitted Gaussian under 2,000 rows
    assert [resolved("ffjord", n).objective for n in (178, 600, 1_999, 2_000, 9_000)] == \
        ["mle", "mle", "mle", "flow-matching", "flow-matching"]
    assert TrainConfig(data="pinwheel", model="ffjord").resolved(DataInfo("toy", 3000, (2,))).objective == "flow-matching"


def test_ffjord_whitens_tables_of_twenty_columns_or_more():
    """A wide table starts from the fitted Gaussian and trains by likelihood with Hutchinson's trace
    (breast cancer, 30 columns, had lost to the Gaussian); a narrow one keeps its Standardize."""
    def resolved(columns, rows=569, model="ffjord", **given):
        return TrainConfig(data="t.csv", model=model, **given).resolved(DataInfo("table", rows, (columns,)))

    wide = resolved(30, rows=3_000)
    assert (wide.objective, wide.model_options["whiten"], wide.model_options["trace"]) == ("mle", True, "hutchinson")
    assert resolved(30).patience * resolved(30).eval_every >= 300  # its validation NLL is flat for ~60 steps
    assert resolved(13).patience == resolved(30, model="nsf").patience
    narrow = resolved(13)
    assert (narrow.model_options["whiten"], narrow.model_options["trace"]) == (False, "exact")
    toy = TrainConfig(data="moons", model="ffjord").resolved(DataInfo("toy", 3000, (2,)))
    assert toy.model_options["whiten"] is False and toy.objective == "flow-matching"
    # the user's objective wins, and the recipe's likelihood-only trace estimator is then left out
    matched = resolved(30, objective="flow-matching")
    assert matched.model_options["trace"] == "exact" and matched.model_options["whiten"] is True
    assert SPECS["ffjord"].idle_options(matched.objective, matched.model_options) == {}
    plain = resolved(30, standardize=False)  # a Whiten standardises: under --no-standardize the recipe's is left out
    assert plain.model_options["whiten"] is False and plain.model_options["trace"] == "hutchinson"


def test_whiten_without_standardize_is_refused_in_one_line(capsys, tmp_path):
    from flowforge.models import FFJORD
    with pytest.raises(ValueError, match="needs standardised data"):
        FFJORD(3, whiten=True)
    code, _, err = cli(capsys, "train", "--model", "ffjord", "--data", "moons", "--model-option", "whiten=true",
                       "--no-standardize", "--out", str(tmp_path / "r"), "--steps", "2", "--no-progress", "--no-plots")
    assert code == 1 and err.count("\n") == 1 and "drop --no-standardize" in err and not (tmp_path / "r").exists()


def test_training_noise_behind_a_whiten_is_shaped_like_the_data():
    """Per-feature noise would swamp the thin directions a Whiten stretches to unit width: behind one
    the noise A ε has the covariance noise² · Cov(x)."""
    import torch
    from flowforge.models import FFJORD
    from flowforge.training.loop import _jitter_scale, draw_batch
    from flowforge.transforms import fit_standardization

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2_000, 3, generator=generator, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.99, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    config = TrainConfig(data="t.csv", model="ffjord", train_noise=0.1)
    flat = FFJORD(3, hidden=8, depth=1, standardize=True).double()
    whitened = FFJORD(3, hidden=8, depth=1, standardize=True, whiten=True).double()
    fit_standardization(flat, x), fit_standardization(whitened, x)
    assert torch.allclose(_jitter_scale(config, x, flat), 0.1 * x.std(0))
    factor = _jitter_scale(config, x, whitened)
    centred = x - x.mean(0)
    assert torch.allclose(factor @ factor.T, 0.01 * centred.T @ centred / len(x), atol=1e-10)
    batch, _ = draw_batch(torch.zeros(1, 3, dtype=torch.float64), 20_000, generator, factor)
    assert torch.allclose(torch.cov(batch.T), factor @ factor.T, rtol=0.1, atol=1e-3)  # per-feature: (0, 1) is 0


def test_the_gaussian_baseline_is_the_exact_nll_of_a_fitted_gaussian():
    from flowforge.training.evaluate import gaussian_baseline_nll

    rng = np.random.default_rng(1)
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    train_rows = rng.multivariate_normal([1.0, -1.0], cov, size=200_000)
    test_rows = rng.multivariate_normal([1.0, -1.0], cov, size=200_000)
    entropy = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * cov))
    assert gaussian_baseline_nll(train_rows, test_rows) == pytest.approx(entropy, abs=0.01)
    # units do not move it (beyond the log-scale): a column of 10⁻³ beside one of 10³ keeps its correlation
    units = np.array([1e-3, 1e3])
    shifted = gaussian_baseline_nll(train_rows * units, test_rows * units) - np.log(units).sum()
    assert shifted == pytest.approx(gaussian_baseline_nll(train_rows, test_rows), abs=1e-6)


def test_the_command_line_module_imports_neither_torch_nor_sklearn():
    code = "import sys, flowforge.cli; print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_leaves_the_callers_global_rng_as_it_found_it(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(small_config(steps=3, eval_every=3), tmp_path / "r", progress_bar=False)
    assert torch.equal(torch.rand(3), expected)


def test_an_image_run_scores_each_image_in_bits_per_dim(capsys, tmp_path):
    from flowforge.data import load_splits

    code, _, err = cli(capsys, "train", "--model", "glow", "--data", "digits", "--steps", "2", "--eval-every", "2",
                       "--model-option", "levels=1", "--model-option", "steps=1", "--hidden", "8",
                       "--out", str(tmp_path / "g"), "--no-plots", "--no-progress")
    assert code == 0, err
    images = load_splits("digits").test[:7]
    np.save(tmp_path / "some.npy", images)
    code, _, err = cli(capsys, "density", str(tmp_path / "g"), str(tmp_path / "some.npy"), "-o", str(tmp_path / "s.csv"))
    assert code == 0, err
    lines = (tmp_path / "s.csv").read_text().splitlines()
    scores = np.array([float(v) for v in lines[1:]])
    assert lines[0] == "bits_per_dim" and len(scores) == 7 and np.isfinite(scores).all() and (scores > 0).all()
    # pixels that are not 8-bit integers were scored anyway (1.4 million bits/dim, exit 0): refused
    for bad, words in ((images - 1, "pixel value -1 is not an 8-bit pixel"), (images * 4, "is not an 8-bit pixel"),
                       (images / 255, "multiply by 255"), (images + 0.5, "pixel value 0.5")):
        np.save(tmp_path / "bad.npy", bad)
        code, _, err = cli(capsys, "density", str(tmp_path / "g"), str(tmp_path / "bad.npy"), "-o", str(tmp_path / "b.csv"))
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "b.csv").exists()
    # a folder of PNGs: every image scored, in file-name order (not a held-out tenth of them), however few
    from PIL import Image

    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(images[:5]):
        Image.fromarray(image[0].astype(np.uint8), mode="L").save(tmp_path / "pngs" / f"{4 - i}.png")
    np.save(tmp_path / "in_name_order.npy", images[:5][::-1])
    scored = {}
    for source in ("pngs", "in_name_order.npy"):
        code, out, err = cli(capsys, "density", str(tmp_path / "g"), str(tmp_path / source))
        assert code == 0, err
        scored[source] = [float(v) for v in out.split()]
    assert len(scored["pngs"]) == 5 and scored["pngs"] == scored["in_name_order.npy"]
    # an image's score is its own: the same image first, or after others, or in a smaller batch
    np.save(tmp_path / "reordered.npy", images[:5][[2, 0, 4]])
    code, out, err = cli(capsys, "density", str(tmp_path / "g"), str(tmp_path / "reordered.npy"))
    assert code == 0, err
    assert [float(v) for v in out.split()] == [scored["in_name_order.npy"][i] for i in (2, 4, 0)]
    code, out, err = cli(capsys, "eval", str(tmp_path / "g"), "--data", str(tmp_path / "pngs"), "--json")
    assert code == 0 and json.loads(out)["n"] == 5, err
    # an image sample's .npy beside its .png is a file written too: an existing one is not replaced unasked
    before = (tmp_path / "some.npy").read_bytes()
    code, _, err = cli(capsys, "sample", str(tmp_path / "g"), "-n", "2", "-o", str(tmp_path / "some.png"))
    assert code == 1 and "some.npy: exists; pass --force" in err
    assert (tmp_path / "some.npy").read_bytes() == before and not (tmp_path / "some.png").exists()
    code, _, err = cli(capsys, "sample", str(tmp_path / "g"), "-n", "2", "-o", str(tmp_path / "some.jpg"))
    assert code == 1 and "some.jpg: unsupported output type .jpg" in err
    code, _, err = cli(capsys, "density", str(tmp_path / "g"), str(tmp_path / "s.csv"))
    assert code == 1 and err.count("\n") == 1


def test_a_named_recipe_from_the_command_line_with_options_over_it(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--recipe", "book", "--steps", "4", "--eval-every", "2", "--n-train", "300",
                       "--out", str(tmp_path / "book"), "--no-plots", "--no-progress")
    assert code == 0, err
    train_config = json.loads((tmp_path / "book" / "config.json").read_text())["train"]
    assert (train_config["recipe"], train_config["l2"], train_config["lr"], train_config["steps"]) == \
        ("book", 0.01, 1e-4, 4)
    assert train_config["model_options"]["separate_networks"] is True
    code, _, err = cli(capsys, "train", "--recipe", "cake", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown recipe 'cake'" in err


@pytest.mark.parametrize("model, data", [("realnvp", "moons"), ("nsf", "moons"), ("maf", "moons"),
                                         ("ffjord", "pinwheel"), ("glow", "digits"), ("realnvp-image", "digits")])
def test_each_default_recipe_trains_and_its_loss_falls(tmp_path, model, data):
    # the recipe as it is (model size, lr, batch), only shortened: 60 steps, a record every 20
    results = train(TrainConfig(model=model, data=data, steps=60, eval_every=20, n_train=1000), tmp_path / "r",
                    progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    key = "train_nll" if "train_nll" in records[0] else "train_loss"
    assert records[-1][key] < records[0][key] and np.isfinite(results["test_nll"])
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert recorded["recipe"].startswith(f"{model}/") and results["nan_events"] == 0


def test_a_resumed_run_keeps_its_own_model_not_todays_recipe(tmp_path):
    """A format-1 glow run that recorded no bits was trained at the builder's 8 bits: resuming it must
    not take the digits recipe's 4 bits (eval would load the weights at 8 again)."""
    import shutil
    from pathlib import Path

    run = tmp_path / "g"
    shutil.copytree(Path(__file__).parent / "fixtures" / "runs_v1" / "glow", run)
    config = json.loads((run / "config.json").read_text())
    del config["train"]["model_options"]["bits"]
    (run / "config.json").write_text(json.dumps(config))
    _, before, _ = load_run(run)
    results = train(TrainConfig(model="glow", data="digits", steps=before.steps + 2), run, resume=True,
                    progress_bar=False)
    flow, _, _ = load_run(run)
    assert flow.bits == 8 and results["steps"] == before.steps + 2


def test_train_help_shows_every_registered_models_recipe():
    from click.testing import CliRunner

    from flowforge.cli import cli as command_group

    text = CliRunner().invoke(command_group, ["train", "--help"], terminal_width=400).output
    for name, spec in SPECS.items():
        natural = NATURAL_DATA[spec.input_kind][1]
        assert f"lr={spec.recipe(natural)['lr']}" in text.split(f"  {name}, ")[1].splitlines()[0]


def test_an_unknown_model_option_is_refused_with_the_models_options(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--data", "moons", "--model", "nsf", "--model-option", "nbins=8",
                       "--steps", "5", "--out", tmp_path / "r")
    assert code == 1 and "model 'nsf' has no option nbins; its options:" in err and "bins" in err
    assert not (tmp_path / "r").exists()


def test_ffjord_trains_on_a_wide_table_from_its_gaussian(capsys, tmp_path):
    """End to end on 24 near-collinear columns: the run whitens, records it, and samples back in data units."""
    from flowforge.training.checkpoint import read_json

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 4))
    x = latent @ rng.normal(size=(4, 24)) + 0.05 * rng.normal(size=(400, 24)) + 100.0
    _write_table(tmp_path / "wide.csv", x, [f"c{i}" for i in range(24)])
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--model", "ffjord", "--data", str(tmp_path / "wide.csv"), "--out", str(run),
                       "--steps", "3", "--eval-every", "3", "--hidden", "8", "--no-plots", "--no-progress")
    assert code == 0, err
    config = read_json(run / "config.json")["train"]
    assert config["objective"] == "mle" and config["model_options"]["whiten"] is True
    code, _, err = cli(capsys, "sample", str(run), "-n", "200", "-o", str(tmp_path / "s.csv"))
    assert code == 0, err
    drawn = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert drawn.shape == (200, 24) and np.isfinite(drawn).all() and abs(drawn.mean() - x.mean()) < 5
    results = read_json(run / "results.json")  # three steps from the Gaussian: near it (Standardize alone: 70 nats worse)
    assert abs(results["test_nll"] - results["test_gaussian_nll"]) < 2.0, results
