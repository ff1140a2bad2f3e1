"""Every user mistake of issue 17 ends with exit 1 or 2, one line in flowforge's words, and the
files on disk as they were; numbers that float32 cannot hold are refused or scored -inf, never NaN."""

import errno
import json
import math
import os

import numpy as np
import pytest
import torch
from cli_harness import SMALL, assert_one_line, cli, file_hashes, measured_cli, refused, run  # noqa: F401

TRAIN = ["train", "--data", "moons", "--steps", 20, "--eval-every", 10, *SMALL]


def _table(path, rows):
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


OPTION_MISTAKES = {
    "negative seed": (["train", "--seed", -1, "--out", "{tmp}/r"], "--seed"),
    "nproc beyond the machine": (["train", "--nproc", 64, "--out", "{tmp}/r"], "--nproc"),
    "nan lr": (["train", "--lr", "nan", "--out", "{tmp}/r"], "--lr"),
    "inf grad clip": (["train", "--grad-clip", "inf", "--out", "{tmp}/r"], "--grad-clip"),
    "nan temperature": (["sample", "{run}", "-o", "{tmp}/s.csv", "--temperature", "nan"], "--temperature"),
    "inf temperature": (["sample", "{run}", "-o", "{tmp}/s.csv", "--temperature", "inf"], "--temperature"),
    "huge temperature": (["sample", "{run}", "-o", "{tmp}/s.csv", "--temperature", 1e40], "--temperature"),
    "zero temperature": (["sample", "{run}", "-o", "{tmp}/s.csv", "--temperature", 0], "--temperature"),
    "negative sample seed": (["sample", "{run}", "-o", "{tmp}/s.csv", "--seed", -1], "--seed"),
}


@pytest.mark.parametrize("args, words", OPTION_MISTAKES.values(), ids=OPTION_MISTAKES)
def test_bad_options_exit_2_naming_the_option(run, tmp_path, capsys, args, words):
    args = [str(a).format(run=run, tmp=tmp_path) for a in args]
    refused(capsys, 2, args, (words,), run, tmp_path)


def test_values_outside_sane_ranges_are_refused_naming_the_option(tmp_path, capsys):
    # the command line's ranges are the config's own (flowforge.training.fields): refused as options
    refused(capsys, 2, [*TRAIN, "--lr", 1e9, "--out", tmp_path / "r"], ("'--lr'", "range"), tmp_path)
    refused(capsys, 1, ["train", "--data", "moons", "--steps", 20, "--model-option", "num_layers=1000000", "--out",
                        tmp_path / "r"], ("--model-option num_layers", "above the limit"), tmp_path)


DATA_MISTAKES = {
    "overflows float32": ([[1e39, 1]] + [[i, 2 * i] for i in range(20)], "too large for float32"),
    "underflows float32": ([[i * 1e-300, 1e-300 * (i % 3)] for i in range(20)], "too small for float32"),
    "a row too long": ([[0] * 600_000, [1, 2]], "longer than 1 MiB"),
}


@pytest.mark.parametrize("rows, words", DATA_MISTAKES.values(), ids=DATA_MISTAKES)
def test_data_float32_cannot_hold_is_refused_before_a_run_starts(tmp_path, capsys, rows, words):
    data = _table(tmp_path / "d.csv", rows)
    refused(capsys, 1, [*TRAIN, "--data", data, "--out", tmp_path / "r"], (words,), tmp_path)
    assert not (tmp_path / "r").exists()


def test_complex_npy_is_refused_not_truncated_to_its_real_part(tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.arange(40).reshape(20, 2) + 1j)
    refused(capsys, 1, [*TRAIN, "--data", tmp_path / "c.npy", "--out", tmp_path / "r"], ("complex",), tmp_path)


def test_divergence_before_any_checkpoint_says_none_was_written(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = cli(capsys, *TRAIN, "--lr", 1000, "--steps", 50, "--eval-every", 50, "--on-nan", "stop",
                       "--out", out)
    assert code == 1
    assert_one_line(err, "error", "diverged", "no checkpoint was written")
    assert not (out / "checkpoint.safetensors").exists()


def test_a_full_disk_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("flowforge.training.checkpoint.os.fsync", full)
    refused(capsys, 1, [*TRAIN, "--out", tmp_path / "r"], ("No space left on device",), tmp_path)


def test_a_read_only_place_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "r"))

    monkeypatch.setattr("flowforge.atomic.tempfile.mkstemp", read_only)
    refused(capsys, 1, [*TRAIN, "--out", tmp_path / "r"], ("Read-only file system",), tmp_path)
    # the parents a new run directory needed go with it
    refused(capsys, 1, [*TRAIN, "--out", tmp_path / "a" / "b" / "r"], ("Read-only file system",), tmp_path)
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    refused(capsys, 1, [*TRAIN, "--out", tmp_path / "file" / "r"], ("cannot be created",), tmp_path)


def test_a_path_that_is_not_utf8_is_refused_before_training(tmp_path, capsys):
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/r\xff")
    refused(capsys, 1, [*TRAIN, "--out", out], ("not valid UTF-8",), tmp_path)
    assert os.listdir(tmp_path) == []


def test_numpy_warnings_become_one_flowforge_line(run, tmp_path, capsys, monkeypatch):
    from flowforge import data as data_module

    original = data_module.read_table

    def noisy(*args, **kwargs):
        np.log(np.zeros(1))  # numpy's RuntimeWarning: divide by zero
        return original(*args, **kwargs)

    monkeypatch.setattr(data_module, "read_table", noisy)  # the command imports it when it runs
    code, out, err = cli(capsys, "density", run, _table(tmp_path / "p.csv", [[0, 0]]))
    assert code == 0 and math.isfinite(float(out))
    assert_one_line(err, "warning", "divide by zero", "RuntimeWarning")


@pytest.mark.parametrize("row, words", [([1e38, 1e38], "could not be scored"), ([1e300, 0], "beyond float32")])
def test_density_of_a_finite_point_is_minus_inf_never_nan(run, tmp_path, capsys, row, words):
    points = _table(tmp_path / "p.csv", [row, [0, 0]])
    before = file_hashes(run, points)
    code, out, err = cli(capsys, "density", run, points)
    values = [float(v) for v in out.split()]
    assert code == 0 and values[0] == -math.inf and math.isfinite(values[1])
    assert_one_line(err, "warning", words)
    assert file_hashes(run, points) == before


def test_sparse_two_gigabyte_file_is_refused_fast_in_little_memory(tmp_path):
    sparse = tmp_path / "sparse.csv"
    with open(sparse, "wb") as fh:
        fh.truncate(2 << 30)
    before = file_hashes(tmp_path / "nothing")  # hashing 2 GB would dwarf the test; its size is checked
    result, peak_mb, seconds = measured_cli("train", "--data", sparse, "--out", tmp_path / "r", "--no-progress")
    assert result.returncode == 1
    assert_one_line(result.stderr, "error", "not a CSV table")
    assert seconds < 10 and peak_mb < 500, (seconds, peak_mb)
    assert sparse.stat().st_size == 2 << 30 and before == {} and not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A two-coupling, 16-unit RealNVP: sampling ten million points from it takes seconds."""
    from conftest import small_config

    from flowforge.training import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(small_config(steps=10, eval_every=10, model_options={"num_layers": 2, "hidden": 16, "depth": 1}), out,
          progress_bar=False)
    return out


def test_sampling_memory_does_not_grow_with_n(tiny_run, tmp_path):
    peaks = []
    for num in (1000, 2_000_000):
        result, peak_mb, _ = measured_cli("sample", tiny_run, "-n", num, "-o", tmp_path / "s.npy", "--force")
        assert result.returncode == 0, result.stderr
        peaks.append(peak_mb)
    assert np.load(tmp_path / "s.npy", mmap_mode="r").shape == (2_000_000, 2)
    assert peaks[1] - peaks[0] < 100, peaks  # holding the 2 M samples at once took over 1 GB


@pytest.mark.slow  # about 6 s on an idle 2-core machine, a minute on a busy one
def test_sample_ten_million_stays_under_a_gigabyte(tiny_run, tmp_path):
    result, peak_mb, seconds = measured_cli("sample", tiny_run, "-n", 10_000_000, "-o", tmp_path / "s.npy")
    assert result.returncode == 0, result.stderr
    samples = np.load(tmp_path / "s.npy", mmap_mode="r")
    assert samples.shape == (10_000_000, 2) and np.isfinite(samples[-1000:]).all()
    assert peak_mb < 1000, peak_mb


def test_samples_in_small_batches_are_complete_and_seeded(tiny_run, tmp_path, capsys, monkeypatch):
    from flowforge import cli as cli_module

    monkeypatch.setattr(cli_module, "SAMPLE_BATCH", 3)
    for name, seed in (("a.csv", 4), ("b.npy", 4), ("c.npy", 5)):
        code, _, err = cli(capsys, "sample", tiny_run, "-n", 10, "-o", tmp_path / name, "--seed", seed)
        assert code == 0, err
    a = np.loadtxt(tmp_path / "a.csv", delimiter=",", skiprows=1)
    b, c = np.load(tmp_path / "b.npy"), np.load(tmp_path / "c.npy")
    assert a.shape == b.shape == (10, 2) and np.allclose(a, b, atol=1e-6) and not np.allclose(b, c)


def test_sample_and_density_never_write_over_a_users_file_unasked(run, tmp_path, capsys):
    """An existing output is refused without --force, an input of the command even with it; a
    replaced file keeps its permissions and a new one gets the umask's."""
    mine = tmp_path / "mine.csv"
    mine.write_text("0.1,0.2\n0.3,0.4\n")
    os.chmod(mine, 0o640)
    refused(capsys, 1, ["sample", run, "-n", 3, "-o", mine], ("mine.csv: exists", "--force"), run, tmp_path)
    refused(capsys, 1, ["density", run, mine, "-o", mine, "--force"], ("mine.csv: is an input",), run, tmp_path)
    refused(capsys, 1, ["density", run, mine, "-o", run / "metrics.jsonl"], ("metrics.jsonl: is the run's own",), run, tmp_path)
    for own in ("config.json", "model.safetensors"):  # the run's own files: not even with --force
        refused(capsys, 1, ["sample", run, "-n", 3, "-o", run / own, "--force"], (own, "the run's own file"), run)
    assert cli(capsys, "sample", run, "-n", 3, "-o", mine, "--force")[0] == 0
    assert len(mine.read_text().splitlines()) == 4 and (os.stat(mine).st_mode & 0o777) == 0o640
    os.chmod(mine, 0o444)  # a read-only file is replaced too, when asked, and stays read-only
    assert cli(capsys, "sample", run, "-n", 2, "-o", mine, "--force")[0] == 0
    assert len(mine.read_text().splitlines()) == 3 and (os.stat(mine).st_mode & 0o777) == 0o444
    umask = os.umask(0o027)
    try:
        assert cli(capsys, "density", run, mine, "-o", tmp_path / "new.csv")[0] == 0
        assert cli(capsys, *TRAIN, "--out", tmp_path / "fresh")[0] == 0
    finally:
        os.umask(umask)
    for path in (tmp_path / "new.csv", tmp_path / "fresh" / "model.safetensors", tmp_path / "fresh" / "config.json"):
        assert (os.stat(path).st_mode & 0o777) == 0o640, path


def test_a_data_file_edited_since_training_is_noticed(tmp_path, capsys):
    """train records the file's SHA-256: eval of the held-out split warns, resume refuses (the same
    seed would split other rows), and --data still scores the file as it is."""
    rows = np.random.default_rng(0).normal(size=(60, 2))
    table = _table(tmp_path / "mine.csv", rows)
    assert cli(capsys, "train", "--data", table, "--steps", 10, "--eval-every", 5, "--out", tmp_path / "r", *SMALL)[0] == 0
    code, _, err = cli(capsys, "eval", tmp_path / "r")
    assert code == 0 and err == ""
    refused(capsys, 1, ["sample", tmp_path / "r", "-n", 3, "-o", table, "--force"],  # its training data
            ("mine.csv", "the data it was trained on"), tmp_path)
    _table(table, rows[::-1])
    code, out, err = cli(capsys, "eval", tmp_path / "r")
    assert code == 0 and "held-out test split" in out
    assert_one_line(err, "warning", "mine.csv: changed since", "--data FILE")
    code, out, err = cli(capsys, "plot", tmp_path / "r")  # plot draws the training rows too: it says so
    assert code == 0 and "flow.png" in out
    assert_one_line(err, "warning", "mine.csv: changed since", "splits are not the run's")
    refused(capsys, 1, ["train", "--resume", tmp_path / "r", "--steps", 20, "--no-progress"],
            ("mine.csv: changed (or gone) since", "start a new run"), tmp_path)
    code, out, err = cli(capsys, "eval", tmp_path / "r", "--data", table)
    assert code == 0 and err == "" and "60 points" in out
    table.unlink()  # gone: the loader's one line, no warning before it
    refused(capsys, 1, ["eval", tmp_path / "r"], ("mine.csv: no such file", "--data FILE"), tmp_path)
    (tmp_path / "r" / "plots" / "training_curve.png").unlink()
    code, out, err = cli(capsys, "plot", tmp_path / "r")  # the training curve needs no data
    assert code == 0 and out.splitlines() == [f"wrote {tmp_path / 'r' / 'plots' / 'training_curve.png'}"]
    assert_one_line(err, "warning", "mine.csv: no such file", "was trained on", "drew the training curve only")
    assert (tmp_path / "r" / "plots" / "training_curve.png").stat().st_size > 0


def test_a_folders_digest_follows_its_files(tmp_path):
    from flowforge.data import data_digest

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"one")
    first = data_digest(str(tmp_path / "imgs"))
    (tmp_path / "imgs" / "b.png").write_bytes(b"two")
    second = data_digest(str(tmp_path / "imgs"))
    (tmp_path / "imgs" / "scores.csv").write_text("1.5\n")  # not an image: not part of the data
    assert data_digest(str(tmp_path / "imgs")) == second
    assert data_digest("mnist", "/nowhere") is None  # unreadable: nothing recorded
    (tmp_path / "imgs" / "b.png").write_bytes(b"tw0")
    assert len({first, second, data_digest(str(tmp_path / "imgs"))}) == 3
    assert data_digest("moons") is None and data_digest("digits") is None and data_digest("mnist") is None
    assert data_digest(str(tmp_path / "gone.csv")) is None


def _far_from_zero(path, rows: int = 500):
    """A table whose column 'a' varies by 0.01 around 10⁶, where float32's steps are 0.0625."""
    x = np.random.default_rng(0).standard_normal((rows, 2))
    x[:, 0] = 1e6 + 0.01 * x[:, 0]
    np.savetxt(path, x, delimiter=",", header="a,b", comments="", fmt="%.17g")
    return x


def test_a_float64_run_reads_scores_and_writes_its_data_in_float64(tmp_path, capsys):
    data = tmp_path / "d.csv"
    x = _far_from_zero(data)
    code, _, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "r32", "--steps", 30, *SMALL)
    assert code == 0 and "column 'a' holds 2 distinct values as float32" in err and "--dtype float64" in err
    run = tmp_path / "r64"
    code, _, err = cli(capsys, "train", "--data", data, "--out", run, "--steps", 30, "--dtype", "float64", *SMALL)
    assert code == 0 and "distinct values" not in err
    from flowforge.training import load_run

    standardize = load_run(run)[0].transform.transforms[0]  # statistics of the float64 rows, not of float32's 2 values
    assert standardize.std.dtype == torch.float64 and standardize.std[0].item() == pytest.approx(x[:, 0].std(), rel=0.2)
    # eval and density read the file alike (in float64): the mean log-density is eval's NLL in data units
    code, out, _ = cli(capsys, "eval", run, "--data", data, "--json")
    nll_data = json.loads(out)["nll_data"]
    code, out, _ = cli(capsys, "density", run, data)
    assert code == 0 and -np.mean([float(v) for v in out.split()]) == pytest.approx(nll_data, abs=1e-9)
    assert len(out.split()[0].lstrip("-").replace(".", "")) > 12  # printed in float64's digits
    # the draws keep float64's digits: far more distinct values of 'a' than float32's few steps at 10⁶
    assert cli(capsys, "sample", run, "-n", 200, "-o", tmp_path / "s.csv")[0] == 0
    drawn = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert len(np.unique(drawn[:, 0])) > 150 and abs(drawn[:, 0].mean() - 1e6) < 0.1
    assert len(np.unique(x[:, 0].astype(np.float32))) < 10  # what float32 would have kept


def test_a_coarse_column_of_a_float32_npy_file_is_blamed_on_the_file(tmp_path, capsys):
    # --dtype float64 cannot bring back what the file lost when it was saved as float32.
    x = _far_from_zero(tmp_path / "d.csv")
    np.save(tmp_path / "d32.npy", x.astype(np.float32))
    for dtype in ("float32", "float64"):  # read in float64, its values are still float32's few
        code, _, err = cli(capsys, "train", "--data", tmp_path / "d32.npy", "--out", tmp_path / dtype, "--steps", 5,
                           "--dtype", dtype, *SMALL)
        assert code == 0 and "column 'x0' holds 2 distinct values as float32" in err, dtype
        assert "the file stores float32" in err and "--dtype float64" not in err, dtype
    np.save(tmp_path / "d64.npy", x)  # stored in float64: read so, nothing was lost
    code, _, err = cli(capsys, "train", "--data", tmp_path / "d64.npy", "--out", tmp_path / "r64", "--steps", 5,
                       "--dtype", "float64", *SMALL)
    assert code == 0 and "distinct values" not in err


def test_a_float64_conditional_run_takes_its_conditions_in_float64(tmp_path, capsys):
    # Conditions 0.01 apart at 10⁶ are one float32 value: they must reach the flow as they were given.
    rng = np.random.default_rng(0)
    theta = 1e6 + 0.01 * rng.standard_normal(400)
    table = np.column_stack([theta, (theta - 1e6) * 100 + 0.1 * rng.standard_normal(400), rng.standard_normal(400)])
    data = tmp_path / "d.csv"
    np.savetxt(data, table, delimiter=",", header="theta,x,y", comments="", fmt="%.17g")
    run = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--data", data, "--context-columns", "theta", "--out", run, "--steps", 60,
                       "--dtype", "float64", *SMALL)
    assert code == 0, err
    from flowforge.training import load_run

    flow = load_run(run)[0]
    expected = flow.log_prob(torch.from_numpy(table[:20, 1:]), context=torch.from_numpy(table[:20, :1])).detach()
    np.savetxt(tmp_path / "q.csv", table[:20], delimiter=",", header="theta,x,y", comments="", fmt="%.17g")
    code, out, _ = cli(capsys, "density", run, tmp_path / "q.csv")
    assert code == 0 and np.allclose([float(v) for v in out.split()], expected.numpy(), rtol=0, atol=1e-9)
    draws = {}
    for value in ("1000000.02", "1000000.03"):
        assert cli(capsys, "sample", run, "-n", 50, "--context", value, "--seed", 1, "-o", tmp_path / f"{value}.csv")[0] == 0
        draws[value] = np.loadtxt(tmp_path / f"{value}.csv", delimiter=",", skiprows=1)
        assert (draws[value][:, 0] == float(value)).all()  # the condition's column as given
    assert not np.array_equal(draws["1000000.02"][:, 1:], draws["1000000.03"][:, 1:])


def test_a_tiny_table_warns_and_reports_no_standard_error_of_one_point(tmp_path, capsys):
    data = _table(tmp_path / "d.csv", [[0.1 * i, (i * 7) % 11 + 0.5 * i] for i in range(11)])
    run = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--data", data, "--out", run, "--steps", 20, *SMALL)
    assert code == 0 and "11 rows leave 1 for validation and 1 for test" in err
    results = json.loads((run / "results.json").read_text(), parse_constant=pytest.fail)  # NaN is not JSON
    assert results["test_nll_stderr"] is None
    code, out, _ = cli(capsys, "eval", run, "--json")
    assert code == 0 and json.loads(out, parse_constant=pytest.fail)["nll_stderr"] is None
    code, out, _ = cli(capsys, "eval", run)
    assert code == 0 and "1 point of its held-out" in out and "nan" not in out.lower()


def test_a_batch_larger_than_the_training_rows_is_warned_of(tmp_path, capsys):
    data = _table(tmp_path / "d.csv", [[math.sin(i), math.cos(3 * i) + 0.1 * i] for i in range(150)])
    code, _, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "r", "--steps", 5, "--batch-size",
                       4000, *SMALL)
    assert code == 0 and "--batch-size 4000 is more than the 120 training rows" in err
    code, _, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "q", "--steps", 5, *SMALL)
    assert code == 0 and "--batch-size" not in err  # the recipe's batch fits the table


def test_a_run_that_has_not_finished_training_says_so_when_used(tmp_path, capsys):
    # eval of a stopped run printed its best-so-far figure as if it were the finished run's
    from flowforge.training import TrainConfig, train

    run = tmp_path / "stopped"
    train(TrainConfig(data="moons", steps=40, eval_every=10, model_options={"num_layers": 2, "hidden": 8}),
          run, progress_bar=False, stop_after=20)
    # stop_after wrote results.json for a run stopped part-way, so nothing warned of it
    assert not (run / "results.json").exists()
    for command in (["eval", run], ["sample", run, "-n", 5, "-o", tmp_path / "s.csv"]):
        code, _, err = cli(capsys, *command)
        assert code == 0
        assert_one_line(err, "warning", f"{run}: its training has not finished", "train --resume")
    assert cli(capsys, "train", "--resume", run, "--no-progress", "--no-plots")[0] == 0
    code, _, err = cli(capsys, "eval", run)
    assert code == 0 and "not finished" not in err


def test_n_train_on_data_it_does_not_apply_to_is_refused(tmp_path, capsys):
    # it was ignored on images and tables, yet recorded in config.json as if it had been used
    for data in ("digits", "wine"):
        refused(capsys, 2, ["train", "--data", data, "--n-train", 100, "--out", tmp_path / data, *SMALL],
                ("--n-train", "toy set"), tmp_path)
    code, _, err = cli(capsys, "train", "--data", "moons", "--n-train", 500, "--steps", 2, "--eval-every", 2,
                       "--out", tmp_path / "moons", *SMALL)
    assert code == 0, err


def test_images_scored_at_fewer_bits_than_their_pixels_hold_are_warned_of(tmp_path, capsys):
    # bits=1 on 4-bit digits scored 0.75 bits/dim, "better" than any 4-bit model, without a word
    base = ["train", "--model", "glow", "--data", "digits", "--steps", 1, "--eval-every", 1, "--hidden", 8,
            "--model-option", "levels=1", "--model-option", "steps=1", "--no-plots", "--no-progress"]
    code, _, err = cli(capsys, *base, "--model-option", "bits=1", "--out", tmp_path / "b1")
    assert code == 0 and "digits has 4-bit pixels and the model scores them at bits=1" in err
    code, _, err = cli(capsys, *base, "--out", tmp_path / "b4")
    assert code == 0 and "-bit pixels" not in err


def test_an_output_in_a_missing_folder_is_named_before_any_work(tmp_path, capsys, trained_run):
    # an image sample to missing/threes.png was refused after sampling, naming missing/threes.npy
    code, _, err = cli(capsys, "sample", trained_run, "-n", 5, "-o", tmp_path / "missing" / "s.csv")
    assert code == 1
    assert_one_line(err, "error", f"{tmp_path / 'missing' / 's.csv'}: its folder", "does not exist")
    from flowforge.cli import _image_outputs  # an image sample's two files: the one asked for is named

    for asked in (tmp_path / "missing" / "threes.png", tmp_path / "missing" / "threes.npy"):
        assert _image_outputs(asked)[0] == asked


def test_a_header_that_does_not_fit_its_rows_is_refused(tmp_path, capsys):
    # a header of 2 names over rows of 3 was dropped without a word (columns x0, x1, x2); a header
    # naming 'a' twice trained, and a later file of the same columns could not be matched by name
    rows = np.random.default_rng(0).standard_normal((60, 3))
    short, twice = tmp_path / "short.csv", tmp_path / "twice.csv"
    np.savetxt(short, rows, delimiter=",", header="a,b", comments="")
    np.savetxt(twice, rows, delimiter=",", header="a,a,b", comments="")
    refused(capsys, 1, ["train", "--data", short, "--out", tmp_path / "r1", *SMALL],
            ("its header names 2 columns but its rows hold 3",), tmp_path)
    refused(capsys, 1, ["train", "--data", twice, "--out", tmp_path / "r2", *SMALL],
            ("its header names 'a' more than once",), tmp_path)
    refused(capsys, 1, ["train", "--data", short, "--context-columns", "b", "--out", tmp_path / "r3", *SMALL],
            ("its header names 2 columns but its rows hold 3",), tmp_path)  # not "no column 'b'"
    from flowforge.data.files import table_columns

    assert table_columns(short, 3) == ["x0", "x1", "x2"]  # as a run trained before the check reads its data


def test_a_path_of_the_wrong_kind_is_named_for_what_it_is(run, tmp_path, capsys):
    # a folder given as a table said "no such file"; a file given as a run, "no such run directory"
    folder = tmp_path / "pngs"
    folder.mkdir()
    refused(capsys, 1, ["density", run, folder], ("pngs: a folder, not a .csv or .npy file",), run)
    refused(capsys, 1, ["eval", run / "config.json"], ("config.json: a file, not a run directory",), run)
    refused(capsys, 1, ["eval", tmp_path / "nothing"], ("nothing: no such run directory",), run)
