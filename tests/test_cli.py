"""The command line end to end, and its promise: one line on stderr and a non-zero exit for bad input."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from flowforge.cli import main


def flowforge(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_train_sample_eval_density_plot_resume(tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, _ = flowforge(capsys, "train", "--data", "moons", "--out", out, "--steps", 40,
                                "--eval-every", 20, "--layers", 2, "--hidden", 16, "--depth", 1,
                                "--seed", 3, "--no-progress", "--no-plots")
    assert code == 0 and "test NLL" in stdout

    code, _, _ = flowforge(capsys, "sample", out, "-n", 100, "-o", tmp_path / "s.csv", "--seed", 1)
    samples = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert code == 0 and samples.shape == (100, 2) and np.isfinite(samples).all()
    code, _, _ = flowforge(capsys, "sample", out, "-n", 100, "-o", tmp_path / "s.npy", "--seed", 1)
    assert np.allclose(np.load(tmp_path / "s.npy"), samples, atol=1e-6)  # same seed, same draws
    code, stdout, _ = flowforge(capsys, "sample", out, "-n", 100, "-o", "-", "--seed", 1)  # CSV on standard output
    assert code == 0 and stdout == (tmp_path / "s.csv").read_text() and not (tmp_path / "-").exists()
    code, stdout, err = flowforge(capsys, "sample", out, "-n", 100, "-o", f"{tmp_path}/-")  # a file named -, not stdout
    assert code == 1 and stdout == "" and "unsupported output type" in err

    code, stdout, _ = flowforge(capsys, "eval", out, "--json")
    report = json.loads(stdout)
    assert code == 0 and report["n"] >= 1000 and report["nll"] == pytest.approx(report["nll_per_dim"] * 2)
    results = json.loads((out / "results.json").read_text())
    assert report["nll"] == pytest.approx(results["test_nll"], abs=1e-6) and report["split"] == "test"
    code, stdout, _ = flowforge(capsys, "eval", out)  # says which points it scored
    assert code == 0 and f"{report['n']} points of its held-out test split" in stdout

    code, _, _ = flowforge(capsys, "density", out, tmp_path / "s.csv", "-o", tmp_path / "lp.csv")
    logp = np.loadtxt(tmp_path / "lp.csv", delimiter=",", skiprows=1)
    assert code == 0 and logp.shape == (100,)
    code, _, _ = flowforge(capsys, "density", out, tmp_path / "s.csv", "-o", tmp_path / "lp.npy")
    assert code == 0 and np.allclose(np.load(tmp_path / "lp.npy"), logp, rtol=1e-6)  # (N,), as log_prob returns
    # Density of the samples in data units: -mean log p is the data-unit NLL of those points.
    code, stdout, _ = flowforge(capsys, "eval", out, "--data", tmp_path / "s.csv", "--json")
    assert json.loads(stdout)["nll_data"] == pytest.approx(-logp.mean(), abs=1e-4) and "split" not in json.loads(stdout)

    code, stdout, _ = flowforge(capsys, "plot", out)
    assert code == 0
    for name in ("flow.png", "density.png", "training_curve.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, _, _ = flowforge(capsys, "train", "--resume", out, "--steps", 60, "--no-progress", "--no-plots")
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert code == 0 and steps == [20, 40, 60]


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model, columns, dtype, figures", [
    ("realnvp", 2, "float64", ("flow.png", "density.png")),  # a float64 run's figures in float64
    ("realnvp", 4, "float64", ("flow.png",)),
    ("maf", 1, "float32", ("density.png",)),  # one feature: no plane for the chapter's figure
    ("ffjord", 1, "float32", ("density.png",)),
])
def test_plot_draws_every_vector_run(tmp_path, capsys, model, columns, dtype, figures):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.csv"
    np.savetxt(data, rng.standard_normal((150, columns)) * [1 + j for j in range(columns)], delimiter=",",
               header=",".join(f"c{j}" for j in range(columns)), comments="")
    small = ["--layers", 2, "--hidden", 16, "--no-progress"] if model != "ffjord" else ["--no-progress"]
    code, _, err = flowforge(capsys, "train", "--model", model, "--data", data, "--out", tmp_path / "r",
                             "--steps", 10, "--dtype", dtype, *small)
    assert code == 0, err
    for name in (*figures, "training_curve.png"):
        assert (tmp_path / "r" / "plots" / name).read_bytes()[:8] == PNG
    assert sorted(p.name for p in (tmp_path / "r" / "plots").glob("*.png")) == sorted((*figures, "training_curve.png"))


def test_console_script_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "flowforge", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("train", "sample", "eval", "density", "plot"):
        assert command in result.stdout


def _corrupt_config(run):
    (run / "config.json").write_text("{not json")


def _corrupt_weights(run):
    (run / "model.safetensors").write_bytes(b"\x00" * 64)


def _truncate_weights(run):
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])


def _missing_weights(run):
    (run / "model.safetensors").unlink()


@pytest.mark.parametrize("damage", [_corrupt_config, _corrupt_weights, _truncate_weights, _missing_weights])
def test_damaged_run_directory_gets_one_line(run, capsys, tmp_path, damage):
    damage(run)
    code, _, err = flowforge(capsys, "sample", run, "-n", 10, "-o", tmp_path / "s.csv")
    assert code == 1 and err.count("\n") == 1 and "error" in err
    assert not (tmp_path / "s.csv").exists()


BAD_INPUTS = [
    (["sample", "{run}", "-n", "-5", "-o", "{tmp}/s.csv"], 2, "-5"),
    (["sample", "{tmp}/no-such-run", "-n", "5", "-o", "{tmp}/s.csv"], 1, "no such run directory"),
    (["train", "--model", "nope", "--out", "{tmp}/r"], 2, "nope"),
    (["train", "--data", "nope", "--out", "{tmp}/r"], 1, "unknown data"),
    (["train", "--data", "{tmp}/constant.csv", "--out", "{tmp}/r", "--steps", "1"], 1, "constant"),
    (["density", "{run}", "{tmp}/three.csv", "-o", "{tmp}/out.csv"], 1, "3 columns"),
    (["density", "{run}", "{tmp}/nan.csv", "-o", "{tmp}/out.csv"], 1, "non-finite"),
    (["eval", "{run}", "--data", "{tmp}/three.csv"], 1, "3 columns"),
    (["eval", "{run}", "--data", "{tmp}/missing.csv"], 1, "no such file"),
    (["sample", "{run}", "-n", "5", "-o", "{tmp}/s.txt"], 1, "unsupported output"),
    (["train", "--resume", "{run}", "--lr", "0.1"], 2, "cannot be given with --resume"),
    (["train", "--out", "{run}", "--steps", "1"], 1, "already holds a run"),
    (["train", "--steps", "0", "--out", "{tmp}/r"], 2, "0"),
    (["train", "--data", "moons"], 2, "--out"),
    (["frobnicate"], 2, "frobnicate"),
]


@pytest.mark.parametrize("args, code, message", BAD_INPUTS)
def test_bad_input_gets_one_line_and_non_zero_exit(run, tmp_path, capsys, args, code, message):
    np.savetxt(tmp_path / "three.csv", np.random.default_rng(0).normal(size=(20, 3)), delimiter=",")
    np.savetxt(tmp_path / "constant.csv", np.ones((20, 2)), delimiter=",")
    (tmp_path / "nan.csv").write_text("1,2\nnan,2\n")
    args = [a.format(run=run, tmp=tmp_path) for a in args]
    got, out, err = flowforge(capsys, *args)
    assert got == code, err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "s.csv").exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['FLOWFORGE_PWNED']}",))


def test_pickled_checkpoint_is_refused_without_running_it(run, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FLOWFORGE_PWNED", str(marker))
    (run / "model.safetensors").write_bytes(pickle.dumps({"weights": _Exploit()}))
    code, _, err = flowforge(capsys, "eval", run)
    assert code == 1 and "corrupt or not a safetensors file" in err
    assert not marker.exists()


def test_a_run_on_a_relative_data_path_resumes_and_evaluates_from_another_directory(tmp_path, capsys, monkeypatch):
    folder, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    rows = np.random.default_rng(0).normal(size=(120, 3))
    np.savetxt(folder / "table.csv", rows, delimiter=",", header="a,b,c", comments="")
    monkeypatch.chdir(folder)
    code, _, err = flowforge(capsys, "train", "--data", "table.csv", "--out", folder / "run", "--steps", 20,
                             "--eval-every", 10, "--layers", 2, "--hidden", 8, "--no-progress", "--no-plots")
    assert code == 0, err
    monkeypatch.chdir(elsewhere)
    code, _, err = flowforge(capsys, "train", "--resume", folder / "run", "--steps", 30, "--no-progress", "--no-plots")
    assert code == 0, err
    code, out, err = flowforge(capsys, "eval", folder / "run", "--json")
    assert code == 0, err
    assert json.loads(out)["data"] == str(folder / "table.csv")


def test_eval_and_density_match_a_csv_by_its_header_names(tmp_path, capsys):
    """A table's header travels with its run: the same rows with their columns reordered score the
    same; a header naming only some of the run's columns is refused, one naming none warns."""
    from cli_harness import assert_one_line

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(150, 3)) * [1.0, 5.0, 0.2] + [0.0, 10.0, -3.0]
    table = tmp_path / "t.csv"
    table.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    run = tmp_path / "r"
    assert flowforge(capsys, "train", "--data", table, "--model", "realnvp", "--steps", "20", "--out", run,
               "--no-plots", "--no-progress")[0] == 0
    shuffled = tmp_path / "s.csv"
    shuffled.write_text("c,a,b\n" + "\n".join(",".join(f"{v:.6f}" for v in r[[2, 0, 1]]) for r in rows) + "\n")
    scores = {}
    for name in (table, shuffled):
        code, out, err = flowforge(capsys, "eval", run, "--data", name, "--json")
        assert code == 0 and err == "", err
        code, values, _ = flowforge(capsys, "density", run, name)
        scores[name] = (json.loads(out)["nll"], values)
    assert scores[table] == scores[shuffled]
    partial = tmp_path / "p.csv"
    partial.write_text("a,b,z\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    code, _, err = flowforge(capsys, "density", run, partial)
    assert code == 1 and "names some of the run's columns but not c" in err
    other = tmp_path / "o.csv"
    other.write_text("u,v,w\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    code, out, err = flowforge(capsys, "eval", run, "--data", other, "--json")
    assert code == 0 and json.loads(out)["nll"] == scores[table][0]
    assert_one_line(err, "warning", "names none of the run's columns (a, b, c); read by position")


@pytest.mark.parametrize("option, words", [("lu=maybe", "lu takes true or false"), ("hidden=abc", "a whole number"),
                                           ("hidden=2.5", "a whole number"), ("bins=true", "a whole number")])
def test_a_model_option_of_the_wrong_type_is_refused_in_one_line(tmp_path, capsys, option, words):
    from cli_harness import assert_one_line

    code, _, err = flowforge(capsys, "train", "--model", "nsf", "--data", "moons", "--steps", "2", "--out",
                             tmp_path / "r", "--model-option", option, "--no-plots", "--no-progress")
    assert code == 2 and not (tmp_path / "r").exists()
    assert_one_line(err, "error", option, words)


@pytest.mark.parametrize("word, value", [("False", False), ("no", False), ("true", True), ("YES", True)])
def test_a_boolean_model_option_reads_the_usual_words(tmp_path, capsys, word, value):
    code, _, err = flowforge(capsys, "train", "--model", "nsf", "--data", "moons", "--steps", "2", "--out",
                             tmp_path / "r", "--model-option", f"lu={word}", "--model-option", "hidden=1.6e1",
                             "--no-plots", "--no-progress")
    assert code == 0, err
    options = json.loads((tmp_path / "r" / "config.json").read_text())["train"]["model_options"]
    assert options["lu"] is value and options["hidden"] == 16 and isinstance(options["hidden"], int)


@pytest.mark.parametrize("mask", ["1,0,1", "[1,0,1]", "[1, 0, 1]"])
def test_a_list_model_option_reads_with_or_without_brackets(tmp_path, capsys, mask):
    table = tmp_path / "t.csv"
    table.write_text("".join(f"{i % 7},{(i * 3) % 5 + 0.5},{i / 10}\n" for i in range(60)))
    code, _, err = flowforge(capsys, "train", "--model", "realnvp", "--data", table, "--steps", "2", "--out",
                             tmp_path / "r", "--model-option", f"mask={mask}", "--no-plots", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["model_options"]["mask"] == [1, 0, 1]


def test_a_size_flag_and_a_model_option_for_the_same_keyword_are_refused(tmp_path, capsys):
    code, _, err = flowforge(capsys, "train", "--model", "nsf", "--data", "moons", "--layers", "3", "--model-option",
                             "num_layers=7", "--out", tmp_path / "r")
    assert code == 2 and "num_layers is given twice" in err


def test_the_chapter_figure_of_a_table_names_the_two_columns_it_shows():
    from flowforge.models import RealNVP
    from flowforge.plots import chapter_figure

    fig = chapter_figure(RealNVP(4, num_layers=2, hidden=8, depth=1), np.random.default_rng(0).normal(size=(50, 4)),
                         n_samples=50, names=["age", "dose", "weight", "height"])
    data_axes, generated_axes = fig.axes[0], fig.axes[3]
    for ax in (data_axes, generated_axes):
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("age", "dose")
    assert "first 2 of 4 dimensions" in fig._suptitle.get_text()


def test_the_density_grid_keeps_a_float64_runs_resolution():
    # At 10⁶ float32's steps are 0.0625: a float32 grid over ±0.05 collapsed to two stripes.
    from flowforge.models import RealNVP
    from flowforge.plots import density_grid

    xs, ys, logp = density_grid(RealNVP(2, num_layers=2, hidden=8, depth=1).double(), (1e6 - 0.05, 1e6 + 0.05),
                                (-1, 1), resolution=50)
    assert len(np.unique(xs)) == 50 and np.isfinite(logp).all()


def test_a_run_without_standardisation_reports_its_nll_in_data_units_once(tmp_path, capsys):
    args = ["train", "--data", "moons", "--steps", 4, "--eval-every", 2, "--layers", 2, "--hidden", 8, "--depth", 1,
            "--no-progress", "--no-plots"]
    code, stdout, _ = flowforge(capsys, *args, "--no-standardize", "--out", tmp_path / "plain")
    assert code == 0 and "nats/sample (data units; a full-covariance Gaussian:" in stdout, stdout
    code, stdout, _ = flowforge(capsys, "eval", tmp_path / "plain")
    assert code == 0 and "nats/sample (data units), " in stdout and "in data units" not in stdout, stdout
    code, stdout, _ = flowforge(capsys, *args, "--out", tmp_path / "standardised")
    assert code == 0 and "nats/sample (standardised units; " in stdout and " in data units; " in stdout, stdout
    code, stdout, _ = flowforge(capsys, "eval", tmp_path / "standardised")
    assert code == 0 and "nats/sample (standardised units), " in stdout and "nats/sample in data units" in stdout
