"""Conditional runs, p(x | c): labelled sets (--context label) and a table's context columns
(--context-columns), from the data through the trainer to sample, density, eval and plot."""

import json

import numpy as np
import pytest
import torch

from cli_harness import SMALL, cli, refused
from flowforge.cli import main
from flowforge.data import load_splits
from flowforge.data.context import ContextInfo, column_positions, parse_condition, points_and_conditions
from flowforge.data.images import load_digits_images, load_digits_labelled
from flowforge.data.toy import TOY_CLASSES, sample_toy, sample_toy_labelled
from flowforge.errors import FlowforgeError
from flowforge.training import load_run, train
from flowforge.training.config import TrainConfig


@pytest.mark.parametrize("name", sorted(TOY_CLASSES))
def test_a_labelled_draw_holds_the_points_of_an_unlabelled_one(name):
    x, label = sample_toy_labelled(name, 500, seed=4)
    assert np.array_equal(x, sample_toy(name, 500, seed=4))
    assert label.min() >= 0 and label.max() == TOY_CLASSES[name] - 1


def test_moon_labels_name_the_upper_and_the_lower_moon():
    x, label = sample_toy_labelled("moons", 2000, seed=0)
    assert x[label == 0, 1].mean() > 0.4 > x[label == 1, 1].mean() + 0.4  # moon 0 arches above moon 1


def test_digit_labels_follow_their_images_through_the_split():
    images, digits = load_digits_labelled()
    assert np.array_equal(images, load_digits_images())
    splits = load_splits("digits", context="label")
    assert splits.context_info == ContextInfo("label", [str(k) for k in range(10)])
    test_labels = splits.context[2].argmax(1)
    index = {image.tobytes(): digit for image, digit in zip(images, digits)}  # digits' images are distinct enough
    agree = np.mean([index[image.tobytes()] == label for image, label in zip(splits.test, test_labels)])
    assert agree > 0.99


def test_context_columns_are_split_off_by_name_or_index(tmp_path):
    table = np.arange(60, dtype=np.float64).reshape(20, 3) * [1, 10, 100]
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c", comments="")
    splits = load_splits(str(tmp_path / "t.csv"), context=["c", "0"])
    assert splits.columns == ["b"] and splits.context_info.names == ["c", "a"]
    rows = np.column_stack([splits.train, splits.context[0]])  # b, c, a
    assert set(map(tuple, rows[:, [2, 0, 1]])) <= set(map(tuple, table.astype(np.float32)))
    with pytest.raises(FlowforgeError, match="no column 'd'"):
        column_positions(["d"], ["a", "b", "c"], "t.csv")
    with pytest.raises(FlowforgeError, match="leaving nothing"):
        column_positions(["a", "b", "c"], ["a", "b", "c"], "t.csv")


def test_train_takes_context_columns_by_index_as_numbers(tmp_path):
    # The README says "header names or 0-based indices": in Python an index is a number
    table = np.random.default_rng(0).standard_normal((200, 4))
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c,d", comments="")
    config = TrainConfig(data=tmp_path / "t.csv", context_columns=[0, "c"], steps=5, eval_every=5)  # a Path too
    assert config.validate().context_columns == ["0", "c"] and config.data == str(tmp_path / "t.csv")
    train(config, tmp_path / "run", progress_bar=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["context_columns"] == ["0", "c"]
    with pytest.raises(FlowforgeError, match="context-columns must be a non-empty list"):
        TrainConfig(context_columns=[True]).validate()


def test_a_condition_is_parsed_or_refused_in_one_line():
    label = ContextInfo("label", ["0", "1", "2"])
    assert parse_condition("2", label).tolist() == [[0.0, 0.0, 1.0]]
    columns = ContextInfo("columns", ["a", "b"], [0, 2])
    assert parse_condition("0.5, -1e3", columns).tolist() == [[0.5, -1000.0]]
    for bad, info in (("3", label), ("x", label), ("1", columns), ("1,2,3", columns), ("1,nan", columns)):
        with pytest.raises(FlowforgeError):
            parse_condition(bad, info)


def test_a_file_in_the_training_layout_gives_points_and_conditions():
    columns = ContextInfo("columns", ["t"], [1])
    table = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    x, c = points_and_conditions(table, None, columns, ["a", "b"], "f")  # no header: the training positions
    assert x.tolist() == [[1, 3], [4, 6]] and c.tolist() == [[2], [5]]
    x, c = points_and_conditions(table, ["t", "b", "a"], columns, ["a", "b"], "f")  # a header: every column by name
    assert c.tolist() == [[1], [4]] and x.tolist() == [[3, 2], [6, 5]]
    with pytest.raises(FlowforgeError, match="not t"):
        points_and_conditions(table, ["a", "b", "z"], columns, ["a", "b"], "f")
    with pytest.raises(FlowforgeError, match="finite"):
        points_and_conditions(np.array([[1.0, 1e39, 2.0]]), None, columns, ["a", "b"], "f")


def test_a_context_file_is_read_by_its_header_names():
    from flowforge.data.context import columns_by_name, conditions_from_table

    info = ContextInfo("columns", ["a", "b"], [0, 1])
    table = np.array([[1.0, 0.5]])
    assert conditions_from_table(table, info, "f", ["b", "a"]).tolist() == [[0.5, 1.0]]
    assert conditions_from_table(table, info, "f", None).tolist() == [[1.0, 0.5]]
    with pytest.warns(UserWarning, match="f: its header names none of the run's columns .a, b.; read by position"):
        assert conditions_from_table(table, info, "f", ["u", "v"]).tolist() == [[1.0, 0.5]]
    twice = ContextInfo("columns", ["a", "a"], [0, 1])  # a run trained on such a header reads it as it stands
    assert conditions_from_table(table, twice, "f", ["a", "a"]).tolist() == [[1.0, 0.5]]
    with pytest.raises(FlowforgeError, match="f: its header names 'a' more than once"):  # which 'a' is which?
        columns_by_name(np.array([[1.0, 2.0, 3.0]]), ["b", "a", "a"], ["a", "a", "b"], "f")
    # a file without a header gets made-up names x0, x1, …: never matched against a run's x1, x2
    assert columns_by_name(np.array([[1.0, 2.0]]), ["x0", "x1"], ["x1", "x2"], "f").tolist() == [[1.0, 2.0]]
    with pytest.raises(FlowforgeError, match="f: its header names 'a' more than once"):  # the run's own repeats
        columns_by_name(np.array([[1.0, 2.0]]), ["a", "b"], ["a", "a"], "f")
    label = ContextInfo("label", ["0", "1"])
    assert parse_condition("1.0", label).tolist() == [[0.0, 1.0]]


def _upper_moon_fraction(flow, label: int, n: int = 2000) -> float:
    """The fraction of draws given ``label`` that a nearest-neighbour rule puts on the upper moon."""
    from sklearn.neighbors import KNeighborsClassifier

    x, y = sample_toy_labelled("moons", 4000, seed=5)
    condition = torch.zeros(n, 2)
    condition[:, label] = 1
    with torch.no_grad():
        drawn = flow.sample(context=condition, generator=torch.Generator().manual_seed(0)).numpy()
    return float((KNeighborsClassifier(15).fit(x, y).predict(drawn) == 0).mean())


def test_moons_given_the_upper_label_samples_only_the_upper_moon(tmp_path):
    config = TrainConfig(data="moons", context="label", n_train=2000, steps=800, eval_every=200,
                         model_options={"num_layers": 6, "hidden": 64, "depth": 2})
    results = train(config, tmp_path / "m", progress_bar=False)
    flow, _, raw = load_run(tmp_path / "m")
    assert raw["context"]["kind"] == "label" and flow.context_dim == 2
    assert _upper_moon_fraction(flow, 0) > 0.97 and _upper_moon_fraction(flow, 1) < 0.03
    # p(x | moon) holds half the data's spread: it beats the Gaussian whose mean moves with the label
    assert results["conditional"] and results["test_nll"] < results["test_gaussian_nll"] - 0.5


def _simulations(path, rows: int = 1200, seed: int = 0) -> None:
    """A simulator's table: θ (scale 1000) and x | θ ~ N(θ/1000, 0.1²) around a curve, with a header."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-2000, 2000, size=(rows, 1))
    x = np.column_stack([np.sin(theta / 1000), theta / 1000]) + 0.1 * rng.normal(size=(rows, 2))
    np.savetxt(path, np.column_stack([x[:, 0], theta[:, 0], x[:, 1]]), delimiter=",", header="a,theta,b",
               comments="")


def test_context_columns_end_to_end_train_density_sample_eval_plot(tmp_path, capsys):
    data, run = tmp_path / "sims.csv", tmp_path / "r"
    _simulations(data)
    code, out, err = cli(capsys, "train", "--model", "nsf", "--data", data, "--context-columns", "theta",
                         "--out", run, "--steps", 300, "--seed", 1, "--no-progress", "--no-plots")
    assert code == 0, err
    assert "a Gaussian linear in the context" in out
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["context"] == {"kind": "columns", "names": ["theta"], "positions": [1]}
    assert recorded["columns"] == ["a", "b"] and recorded["train"]["model_options"]["context_dim"] == 1
    flow, _, _ = load_run(run)
    table = np.loadtxt(data, delimiter=",", skiprows=1)
    assert flow.context_embedding.std.item() == pytest.approx(table[:, 1].std(), rel=0.15)  # θ seen at unit scale

    code, out, err = cli(capsys, "density", run, data, "-o", tmp_path / "logp.csv")  # the training layout
    logp = np.loadtxt(tmp_path / "logp.csv", skiprows=1)
    assert code == 0 and logp.shape == (1200,) and np.isfinite(logp).all()
    code, _, _ = cli(capsys, "sample", run, "-n", 400, "--context", "1500", "-o", tmp_path / "one.csv", "--seed", 2)
    drawn = np.loadtxt(tmp_path / "one.csv", delimiter=",", skiprows=1)
    header = (tmp_path / "one.csv").read_text().splitlines()[0]
    assert code == 0 and header == "theta,a,b" and drawn.shape == (400, 3) and (drawn[:, 0] == 1500).all()
    assert abs(drawn[:, 2].mean() - 1.5) < 0.25  # x | θ = 1500 sits near b = 1.5, far from the data's mean 0
    np.savetxt(tmp_path / "ctx.csv", [[-1500.0], [0.0]], delimiter=",")
    code, _, _ = cli(capsys, "sample", run, "-n", 200, "--context-file", tmp_path / "ctx.csv", "-o", tmp_path / "two.csv")
    drawn = np.loadtxt(tmp_path / "two.csv", delimiter=",", skiprows=1)
    assert code == 0 and drawn.shape == (400, 3) and (drawn[:200, 0] == -1500).all() and (drawn[200:, 0] == 0).all()
    assert drawn[drawn[:, 0] == -1500, 2].mean() < -1.0 < drawn[drawn[:, 0] == 0, 2].mean()
    code, _, _ = cli(capsys, "density", run, tmp_path / "two.csv", "-o", tmp_path / "back.csv")  # by header names
    assert code == 0 and np.isfinite(np.loadtxt(tmp_path / "back.csv", skiprows=1)).all()
    code, out, _ = cli(capsys, "eval", run, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["n"] == 120 and np.isfinite(summary["nll"])
    code, out, _ = cli(capsys, "plot", run)
    assert code == 0 and (run / "plots" / "conditional_samples.png").stat().st_size > 0

    # bad context input: wrong number of values, not numbers, an unknown column, none at all
    refused(capsys, 1, ["sample", run, "--context", "1,2", "-o", tmp_path / "x.csv"], ("gives 2 values",), tmp_path)
    refused(capsys, 1, ["sample", run, "--context", "big", "-o", tmp_path / "x.csv"], ("numbers",), tmp_path)
    refused(capsys, 1, ["sample", run, "-o", tmp_path / "x.csv"], ("is conditional", "--context"), tmp_path)
    refused(capsys, 1, ["density", run, tmp_path / "ctx.csv"], ("columns",), tmp_path)
    refused(capsys, 1, ["train", "--data", data, "--context-columns", "zeta", "--out", tmp_path / "z", *SMALL],
            ("no column 'zeta'", "a, theta, b"), tmp_path)


def test_a_context_for_an_unconditional_run_is_refused(trained_run, tmp_path, capsys):
    refused(capsys, 1, ["sample", trained_run, "--context", "1", "-o", tmp_path / "x.csv"], ("unconditional",), tmp_path)
    refused(capsys, 1, ["density", trained_run, tmp_path / "p.csv", "--context", "1"], ("unconditional",), tmp_path)
    refused(capsys, 1, ["train", "--data", "checkerboard", "--context", "label", "--out", tmp_path / "c", *SMALL],
            ("no labels",), tmp_path)
    refused(capsys, 1, ["train", "--data", "moons", "--model-option", "context_dim=2", "--out", tmp_path / "c",
                        *SMALL], ("context_dim=2", "--context label"), tmp_path)


def test_eval_on_a_labelled_set_of_other_classes_is_refused(tmp_path, capsys):
    run = tmp_path / "m"
    code, _, err = cli(capsys, "train", "--data", "moons", "--context", "label", "--steps", 4, "--eval-every", 2,
                       "--out", run, *SMALL)
    assert code == 0, err
    refused(capsys, 1, ["eval", run, "--data", "8gaussians"], ("8 values", "conditions on 2"), tmp_path)


def test_a_conditional_run_resumes_and_its_labels_travel_to_samples(tmp_path, capsys):
    run = tmp_path / "p"
    code, _, err = cli(capsys, "train", "--data", "pinwheel", "--context", "label", "--steps", 40, "--eval-every", 20,
                       "--out", run, *SMALL)
    assert code == 0, err
    code, _, err = cli(capsys, "train", "--resume", run, "--steps", 60, "--no-progress", "--no-plots")
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())["steps"] == 60
    code, _, _ = cli(capsys, "sample", run, "-n", 5, "--context", "4", "-o", tmp_path / "arm.csv")
    lines = (tmp_path / "arm.csv").read_text().splitlines()
    assert code == 0 and lines[0] == "label,x0,x1" and all(line.startswith("4,") for line in lines[1:])
    code, _, _ = cli(capsys, "density", run, tmp_path / "arm.csv")  # the label column read back by name
    assert code == 0
    code, _, _ = cli(capsys, "plot", run)
    assert code == 0 and (run / "plots" / "density_by_class.png").is_file()


def test_a_class_conditional_image_run_samples_and_scores_a_class(tmp_path, capsys):
    run = tmp_path / "g"
    code, _, err = cli(capsys, "train", "--model", "glow", "--data", "digits", "--context", "label", "--steps", 4,
                       "--eval-every", 2, "--model-option", "levels=1", "--layers", 2, "--hidden", 8, "--depth", 1,
                       "--out", run, "--no-plots", "--no-progress")
    assert code == 0, err
    code, out, err = cli(capsys, "sample", run, "-n", 6, "--context", "3", "-o", tmp_path / "threes.png")
    assert code == 0, err
    assert np.load(tmp_path / "threes.npy").shape == (6, 1, 8, 8) and (tmp_path / "threes.png").is_file()
    np.save(tmp_path / "imgs.npy", load_digits_images()[:5])
    code, out, err = cli(capsys, "density", run, tmp_path / "imgs.npy", "--context", "3")
    assert code == 0 and len(out.split()) == 5, err
    refused(capsys, 1, ["density", run, tmp_path / "imgs.npy"], ("--context",), tmp_path)
    code, _, err = cli(capsys, "plot", run)
    assert code == 0 and (run / "plots" / "samples_by_class.png").is_file(), err


@pytest.mark.slow
def test_a_class_conditional_glow_draws_digits_a_classifier_recognises(tmp_path):
    """The default recipe with --context label: logistic regression, fitted to real digits, calls
    at least 80% of each asked class's samples (T = 1) that class (measured: 98%)."""
    from benchmarks.conditional_glow import recognised

    code = main(["train", "--model", "glow", "--data", "digits", "--context", "label", "--out", str(tmp_path / "g"),
                 "--no-progress", "--no-plots"])
    assert code == 0
    shares = recognised(tmp_path / "g", per_class=100, temperature=1.0)
    assert shares.mean() >= 0.8 and shares.min() >= 0.6, shares


def test_the_context_embedding_sees_standardised_conditions_and_each_conditional_density_integrates_to_one():
    from flowforge.models import RealNVP
    from flowforge.transforms import StandardizeContext

    torch.manual_seed(0)
    flow = RealNVP(2, num_layers=4, hidden=16, depth=1, context_dim=1).double()
    x, c = torch.randn(7, 2, dtype=torch.float64), 300 + 50 * torch.randn(7, 1, dtype=torch.float64)
    plain = flow.log_prob(x, (c - 300) / 50)
    flow.context_embedding = StandardizeContext(1).double()
    flow.context_embedding.set_statistics(torch.tensor([300.0]), torch.tensor([50.0]))
    assert torch.allclose(flow.log_prob(x, c), plain, atol=1e-12)
    z, _ = flow.forward(x, c)
    assert torch.allclose(flow.inverse(z, c)[0], x, atol=1e-9)
    grid = torch.linspace(-9, 9, 361, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    for condition in (200.0, 300.0, 450.0):
        with torch.no_grad():
            density = flow.log_prob(points, torch.full((len(points), 1), condition, dtype=torch.float64)).exp()
        assert float(density.sum() * (grid[1] - grid[0]) ** 2) == pytest.approx(1.0, abs=0.02)


class _EchoFlow(torch.nn.Module):
    """Draws that repeat their condition: x = (c, draw number within the call)."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def sample(self, shape, context, temperature=1.0, generator=None):
        count, k = shape[0], len(context)
        within = torch.arange(count, dtype=context.dtype)[:, None, None].expand(count, k, 1)
        return torch.cat([context[None].expand(count, k, context.shape[1]), within], 2)


@pytest.mark.parametrize("batch", [3, 7, 1000])
def test_sample_batches_keep_each_conditions_draws_together_and_in_order(monkeypatch, batch):
    from flowforge import cli as cli_module

    monkeypatch.setattr(cli_module, "SAMPLE_BATCH", batch)
    conditions = np.array([[10.0], [20.0], [30.0], [40.0], [50.0]], dtype=np.float32)
    drawn = torch.cat(list(cli_module._sample_batches(_EchoFlow(), 5, 1.0, 0, conditions)))
    assert drawn.shape == (25, 2)
    assert drawn[:, 0].tolist() == [c for c in (10.0, 20.0, 30.0, 40.0, 50.0) for _ in range(5)]
    batches = [len(b) for b in cli_module._sample_batches(_EchoFlow(), 5, 1.0, 0, conditions)]
    assert max(batches) <= max(batch, 5) and sum(batches) == 25


def test_a_non_finite_context_is_refused_in_python_as_on_the_command_line():
    from flowforge.models import NSF

    flow = NSF(3, num_layers=1, hidden=8, context_dim=2)
    for bad in (torch.tensor([[float("nan"), 0.0]]), torch.tensor([[0.0, float("inf")]])):
        with pytest.raises(ValueError, match="context holds NaN or an infinite value"):
            flow.sample(2, context=bad)
        with pytest.raises(ValueError, match="context holds NaN or an infinite value"):
            flow.log_prob(torch.zeros(1, 3), context=bad)


def test_train_context_with_column_names_points_to_context_columns(tmp_path, capsys):
    np.savetxt(tmp_path / "t.csv", np.random.default_rng(0).normal(size=(200, 3)), delimiter=",",
               header="theta1,theta2,x", comments="")
    code, _, err = cli(capsys, "train", "--data", tmp_path / "t.csv", "--context", "theta1,theta2", "--out",
                       tmp_path / "r", "--steps", "5")
    assert code == 2 and "give --context-columns theta1,theta2" in err


def test_density_with_context_on_a_file_that_holds_it_says_to_drop_context(tmp_path, capsys):
    np.savetxt(tmp_path / "t.csv", np.random.default_rng(0).normal(size=(200, 4)), delimiter=",",
               header="theta1,theta2,x,y", comments="")
    run = tmp_path / "r"
    assert cli(capsys, "train", "--data", tmp_path / "t.csv", "--context-columns", "theta1,theta2", "--out", run,
               "--steps", "10", "--no-plots")[0] == 0
    refused(capsys, 1, ["density", run, tmp_path / "t.csv", "--context", "1,0.5"],
            ("has 4 columns but", "expects 2", "already holds the 2 context columns, so drop --context"), run)


def test_a_file_of_the_wrong_width_names_what_each_command_takes(tmp_path, capsys):
    np.savetxt(tmp_path / "t.csv", np.random.default_rng(0).normal(size=(200, 3)), delimiter=",",
               header="theta,x,y", comments="")
    np.savetxt(tmp_path / "x.csv", np.random.default_rng(1).normal(size=(20, 2)), delimiter=",", header="x,y",
               comments="")
    run = tmp_path / "r"
    assert cli(capsys, "train", "--data", tmp_path / "t.csv", "--context-columns", "theta", "--out", run,
               "--steps", "10", "--no-plots")[0] == 0
    # density takes --context (one condition for every row); eval has no such option, so it is not offered
    line = refused(capsys, 1, ["density", run, tmp_path / "x.csv"], ("has 2 columns", "or give --context"), run)
    assert "--context" in line
    line = refused(capsys, 1, ["eval", run, "--data", tmp_path / "x.csv"], ("has 2 columns", "the context theta"), run)
    assert "--context" not in line


def test_a_class_label_given_as_an_integer_is_told_to_be_one_hot():
    from flowforge.models import RealNVP

    flow = RealNVP(2, num_layers=2, hidden=8, depth=1, context_dim=10)
    with pytest.raises(ValueError, match=r"one_hot\(labels, 10\)"):
        flow.log_prob(torch.randn(4, 2), context=torch.tensor([[3], [1], [0], [9]]))
    with pytest.raises(ValueError, match=r"of 10 values, got 3$"):  # a float context of the wrong size: no hint
        flow.log_prob(torch.randn(4, 2), context=torch.randn(4, 3))
