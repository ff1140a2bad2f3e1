"""A run directory from elsewhere is untrusted: its config, sizes, tensors and buffers are checked
before anything is built or believed."""

import json
import time

import pytest
import torch
from cli_harness import assert_one_line, cli, refused, run  # noqa: F401
from safetensors.torch import load_file, save_file

from flowforge.training.validate import count_parameters


def _edit_config(run_dir, edit):
    config = json.loads((run_dir / "config.json").read_text())
    edit(config)
    (run_dir / "config.json").write_text(json.dumps(config))


def _edit_weights(run_dir, edit):
    tensors = load_file(str(run_dir / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(run_dir / "model.safetensors"))


CONFIG_EDITS = {
    "string steps": (lambda c: c["train"].update(steps="many"), "train.steps must be an integer"),
    "train is a list": (lambda c: c.update(train=[1]), "'train' must be an object"),
    "negative seed": (lambda c: c["train"].update(seed=-1), "train.seed must be in"),
    "nan lr": (lambda c: c["train"].update(lr=float("nan")), "train.lr must be a finite number"),
    "unknown on_nan": (lambda c: c["train"].update(on_nan="pray"), "train.on_nan must be"),
    "nested option": (lambda c: c["train"]["model_options"].update(hidden={"a": [1]}), "model_options.hidden"),
    "dim zero": (lambda c: c.update(dim=0), "'dim' must be"),
    "dim huge image": (lambda c: c.update(dim=[1, 10 ** 6, 10 ** 6]), "'dim' must be"),
    "a million layers": (lambda c: c["train"]["model_options"].update(num_layers=10 ** 6), "above the limit"),
    "a billion hidden": (lambda c: c["train"]["model_options"].update(hidden=10 ** 9), "--max-params"),
}


@pytest.mark.parametrize("edit, words", CONFIG_EDITS.values(), ids=CONFIG_EDITS)
@pytest.mark.parametrize("command", ["eval", "sample", "density", "resume"])
def test_bad_config_values_are_refused_quickly_with_the_field_named(run, tmp_path, capsys, edit, words, command):
    _edit_config(run, edit)
    (tmp_path / "p.csv").write_text("0,0\n")
    args = {"eval": ["eval", run], "sample": ["sample", run, "-o", tmp_path / "s.csv"],
            "density": ["density", run, tmp_path / "p.csv"],
            "resume": ["train", "--resume", run, "--no-progress", "--no-plots"]}[command]
    started = time.perf_counter()
    refused(capsys, 1, args, (words,), run, tmp_path)
    assert time.perf_counter() - started < 2.0


def test_deeply_nested_config_is_corrupt_json_not_a_crash(run, capsys):
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(capsys, 1, ["eval", run], ("corrupt JSON",), run)


def test_max_params_can_be_raised(run, tmp_path, capsys):
    refused(capsys, 1, ["eval", run, "--max-params", 100], ("--max-params", "above the limit of 100"), run)
    code, _, err = cli(capsys, "eval", run, "--max-params", 10 ** 7)
    assert code == 0, err


def test_parameter_count_without_building_matches_the_real_model():
    from flowforge.models import build_model

    cases = [("realnvp", 2, {"num_layers": 4, "hidden": 64, "depth": 2}), ("ffjord", 2, {"hidden": 32}),
             ("glow", (1, 8, 8), {"levels": 2, "steps": 2, "hidden": 128}), ("realnvp-image", (1, 8, 8), {}),
             ("nsf", 6, {"num_layers": 3, "hidden": 96}), ("nsf", 5, {"autoregressive": True, "lu": True}),
             ("maf", 7, {"num_layers": 2, "hidden": 80})]
    for name, dim, options in cases:
        real = sum(p.numel() for p in build_model(name, dim, **options).parameters())
        assert count_parameters(lambda: build_model(name, dim, **options)) == real, name


def _key(tensors, suffix):
    """The first tensor name ending in ``suffix`` (names follow the model's structure)."""
    return next(k for k in tensors if k.endswith(suffix))


def _std(value):
    return lambda t: t[_key(t, ".std")].fill_(value)


WEIGHT_EDITS = {
    "std 0": (_std(0.0), "std must be positive"),
    "std -1": (_std(-1.0), "std must be positive"),
    "floats saved as int64": (lambda t: t.update({k: v.long() for k, v in t.items() if k.endswith("weight")}),
                              "holds int64, expected float32"),
    "bad index": (lambda t: t[_key(t, "cond_idx")].fill_(7), "cond_idx"),
    "bad unshuffle": (lambda t: t[_key(t, "unshuffle")].fill_(0), "must be a permutation"),
    "wrong shape": (lambda t: t.update({_key(t, "weight"): torch.zeros(3, 3)}), "has shape (3, 3)"),
    "extra tensor": (lambda t: t.update({"payload": torch.zeros(1)}), "unexpected ['payload']"),
    "nan weight": (lambda t: t[_key(t, "weight")].fill_(float("nan")), "non-finite"),
}


@pytest.mark.parametrize("edit, words", WEIGHT_EDITS.values(), ids=WEIGHT_EDITS)
def test_weights_that_break_an_invariant_are_refused(run, tmp_path, capsys, edit, words):
    _edit_weights(run, edit)
    refused(capsys, 1, ["eval", run], (words,), run, tmp_path)


def test_a_weights_file_far_larger_than_the_model_is_refused_before_reading(run, capsys):
    with open(run / "model.safetensors", "ab") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MB on paper, for a model of a few kB
    refused(capsys, 1, ["eval", run], ("far more than the model's",), run)


def test_resuming_with_another_models_checkpoint_is_one_line(run, tmp_path, capsys):
    other = tmp_path / "other"
    code, _, err = cli(capsys, "train", "--out", other, "--steps", 10, "--eval-every", 10, "--layers", 3,
                       "--hidden", 8, "--depth", 1, "--no-progress", "--no-plots")
    assert code == 0, err
    (run / "checkpoint.safetensors").write_bytes((other / "checkpoint.safetensors").read_bytes())
    refused(capsys, 1, ["train", "--resume", run, "--no-progress", "--no-plots"], ("do not match",), run)


@pytest.mark.parametrize("name, args", [("model.safetensors", ["eval", "{run}"]),
                                         ("checkpoint.safetensors", ["train", "--resume", "{run}", "--steps", "40",
                                                                     "--no-progress"]),
                                         # the best weights are read at a resume's end: refused before its steps
                                         ("model.safetensors", ["train", "--resume", "{run}", "--steps", "400",
                                                                "--no-progress"])])
def test_a_byte_flipped_in_saved_tensors_is_refused_not_scored(run, capsys, name, args):
    """Weights carry the SHA-256 of their tensors: a bit flipped on disk (a bad sector, a bad copy)
    is one line, where it used to give an NLL of 10¹⁰; a file written without one still loads."""
    path = run / name
    data = bytearray(path.read_bytes())
    data[-9] ^= 0x40  # inside the last tensor's bytes, past the header
    path.write_bytes(bytes(data))
    refused(capsys, 1, [a.format(run=run) for a in args], (f"{name}: corrupt", "SHA-256"), run)


def test_weights_saved_without_a_digest_still_load(run, capsys):
    path = run / "model.safetensors"
    save_file(load_file(str(path)), str(path), metadata={"json": "{}"})  # as flowforge wrote them before
    code, out, err = cli(capsys, "eval", run)
    assert code == 0 and "NLL" in out, err


def test_a_changed_number_in_a_checkpoints_metadata_is_refused(run, capsys):
    """The digest covers the metadata too: a step rewritten in the header is not resumed from."""
    path = run / "checkpoint.safetensors"
    data = path.read_bytes()
    at = data.index(b'step\\": ') + len(b'step\\": ')
    digit = data[at:at + 1]
    path.write_bytes(data[:at] + (b"7" if digit != b"7" else b"8") + data[at + 1:])
    refused(capsys, 1, ["train", "--resume", run, "--steps", "60", "--no-progress"],
            ("checkpoint.safetensors: corrupt", "SHA-256"), run)


def test_a_run_without_weights_yet_names_the_process_training_it(run, capsys):
    """Before its first evaluation a run has no weights: eval and plot name the writer holding it,
    not a missing file; with nobody holding it, the missing file is the message."""
    from flowforge.training.rundir import run_lock

    (run / "model.safetensors").unlink()
    with run_lock(run):  # another writer's lock: flock is per open file, so this process counts as one
        for command in (["eval", run], ["plot", run]):
            refused(capsys, 1, command, ("still being trained by another flowforge process (PID", "first evaluation"))
    refused(capsys, 1, ["eval", run], ("model.safetensors: missing",))


def test_column_names_that_do_not_fit_the_run_are_said_not_silently_replaced(run, tmp_path, capsys):
    raw = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**raw, "columns": ["only", "three", "names"][:raw["dim"] + 1]}))
    code, _, err = cli(capsys, "sample", run, "-n", 3, "-o", tmp_path / "s.csv")
    assert code == 0
    assert_one_line(err, "warning", "'columns' are not", "x0, x1")
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == ",".join(f"x{i}" for i in range(raw["dim"]))
