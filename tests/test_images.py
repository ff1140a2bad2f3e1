"""Image data (digits, MNIST IDX files, PNG folders) and image runs end to end on the command line."""

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowforge.cli import main
from flowforge.data import load_points, load_splits
from flowforge.data.idx import parse_idx, read_idx
from flowforge.data.images import load_digits_images, load_mnist, read_png_folder
from flowforge.errors import FlowforgeError
from flowforge.training import TrainConfig

MNIST_DIR = Path("/work/shared/data/mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array, written by hand from the format's description."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_mnist(directory: Path, n_train: int, n_test: int, size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, size, size), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, size, size), dtype=np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(train)))
    (directory / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test))  # not gzipped: also accepted
    return train, test


# ---- IDX ----------------------------------------------------------------------------------------

def test_idx_reader_reads_a_file_written_by_hand(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(images))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), images)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), images)
    labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([7, 0, 9])
    assert parse_idx(labels).tolist() == [7, 0, 9]
    big_endian_ints = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", -5, 70000)
    assert parse_idx(big_endian_ints).tolist() == [-5, 70000]


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x08", "bad magic"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
    (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "promises shape"),
])
def test_idx_reader_refuses_bad_files(data, message):
    with pytest.raises(FlowforgeError, match=message):
        parse_idx(data)


def test_idx_reader_names_a_corrupt_gzip(tmp_path):
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(FlowforgeError, match="bad.gz: cannot be read"):
        read_idx(tmp_path / "bad.gz")


def test_mnist_directory_splits_last_5000_training_images_for_validation(tmp_path):
    train, test = write_fake_mnist(tmp_path / "m", n_train=5012, n_test=7)
    splits = load_splits("mnist", data_dir=str(tmp_path / "m"))
    assert splits.train.shape == (12, 1, 2, 2) and splits.val.shape == (5000, 1, 2, 2)
    assert splits.test.shape == (7, 1, 2, 2) and splits.dim == (1, 2, 2)
    assert np.array_equal(splits.train[:, 0], train[:12]) and np.array_equal(splits.val[-1, 0], train[-1])
    assert np.array_equal(splits.test[:, 0], test)
    by_path = load_splits(str(tmp_path / "m"))  # a directory of IDX files needs no name
    assert np.array_equal(by_path.test, splits.test)
    assert np.array_equal(load_points("mnist", data_dir=str(tmp_path / "m")), splits.test)


def test_mnist_needs_its_directory(tmp_path):
    with pytest.raises(FlowforgeError, match="--data-dir"):
        load_splits("mnist")
    with pytest.raises(FlowforgeError, match="no such directory"):
        load_splits("mnist", data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlowforgeError, match="train-images-idx3-ubyte.gz"):
        load_splits("mnist", data_dir=str(tmp_path / "empty"))


@pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists(), reason="no MNIST in shared data")
def test_real_mnist_has_the_official_shapes():
    train, test = load_mnist(MNIST_DIR)
    assert train.shape == (60000, 1, 28, 28) and test.shape == (10000, 1, 28, 28)
    assert train.min() == 0 and train.max() == 255 and np.array_equal(train, np.round(train))


# ---- digits and PNG folders -------------------------------------------------------------------

def test_digits_are_4_bit_images_on_the_8_bit_scale_with_a_fixed_split():
    images = load_digits_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert set(np.unique(images).tolist()) == {16.0 * v for v in range(16)}
    a, b = load_splits("digits", seed=0), load_splits("digits", seed=5)
    assert np.array_equal(a.test, b.test) and len(a.test) == len(a.val) == 179 and len(a.train) == 1439
    assert a.dim == (1, 8, 8) and a.shape == (1, 8, 8)
    assert load_splits("moons").dim == 2  # vectors keep their integer dimension


def test_image_data_is_not_standardised_by_default():
    from flowforge.models.specs import DataInfo

    digits, moons = DataInfo("image", 1437, (1, 8, 8)), DataInfo("toy", 3000, (2,))
    assert TrainConfig(model="glow", data="digits").resolved(digits).standardize is False
    assert TrainConfig(data="moons").resolved(moons).standardize is True
    assert TrainConfig(data="moons", standardize=False).resolved(moons).standardize is False


def write_pngs(directory: Path, count: int, size=(6, 4), mode="L") -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    arrays = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
    for i, array in enumerate(arrays):
        Image.fromarray(array, mode=mode).save(directory / f"img{i:03d}.png")
    return arrays


def test_png_folder_is_read_as_nchw_and_split_80_10_10(tmp_path):
    grey = write_pngs(tmp_path / "grey", 20)
    images = read_png_folder(tmp_path / "grey")
    assert images.shape == (20, 1, 4, 6) and np.array_equal(images[:, 0], grey)
    splits = load_splits(str(tmp_path / "grey"), seed=3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 2, 2)
    everything = np.concatenate([splits.train, splits.val, splits.test])
    assert np.array_equal(np.sort(everything.ravel()), np.sort(images.ravel()))
    rgb = write_pngs(tmp_path / "rgb", 3, mode="RGB")
    assert np.array_equal(read_png_folder(tmp_path / "rgb"), rgb.transpose(0, 3, 1, 2))


def test_bad_png_folders_get_one_clear_error(tmp_path):
    write_pngs(tmp_path / "sizes", 3)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "sizes" / "odd.png")
    with pytest.raises(FlowforgeError, match=r"odd.png: shape 5×5 grey differs"):
        read_png_folder(tmp_path / "sizes")

    write_pngs(tmp_path / "broken", 3)
    (tmp_path / "broken" / "img001.png").write_bytes(b"not a png at all")
    with pytest.raises(FlowforgeError, match="img001.png: not a readable PNG"):
        read_png_folder(tmp_path / "broken")

    (tmp_path / "deep").mkdir()
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "deep" / "a.png")
    with pytest.raises(FlowforgeError, match="pixel value 1000 is not an 8-bit pixel"):
        read_png_folder(tmp_path / "deep")

    (tmp_path / "none").mkdir()
    with pytest.raises(FlowforgeError, match="no .png images"):
        read_png_folder(tmp_path / "none")

    write_pngs(tmp_path / "few", 4)
    with pytest.raises(FlowforgeError, match="too few"):
        load_splits(str(tmp_path / "few"))


# ---- the command line on digits ---------------------------------------------------------------

def flowforge(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_glow_on_digits_train_eval_sample_plot(tmp_path, capsys):
    run = tmp_path / "digits"
    code, out, err = flowforge(capsys, "train", "--model", "glow", "--data", "digits", "--out", run,
                               "--steps", 30, "--eval-every", 15, "--batch-size", 64, "--hidden", 8,
                               "--model-option", "levels=2", "--model-option", "steps=2",
                               "--model-option", "bits=4", "--no-progress", "--no-plots")
    assert code == 0, err
    assert "bits/dim" in out
    config = json.loads((run / "config.json").read_text())
    assert config["dim"] == [1, 8, 8] and config["train"]["standardize"] is False

    code, out, _ = flowforge(capsys, "eval", run, "--json")
    report = json.loads(out)
    results = json.loads((run / "results.json").read_text())
    assert code == 0 and report["n"] == 179
    assert report["nll"] == pytest.approx(results["test_nll"], abs=1e-4)  # fixed evaluation noise
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (64 * math.log(2)))
    assert 0.5 < report["bits_per_dim"] < 6  # 4-bit data: a uniform model scores 4
    code, out, _ = flowforge(capsys, "eval", run)
    assert code == 0 and f"{report['bits_per_dim']:.4f} bits/dim" in out

    code, out, err = flowforge(capsys, "sample", run, "-n", 10, "-o", "-")
    assert code == 2 and out == "" and "give -o FILE.png" in err and err.count("\n") == 1
    code, out, _ = flowforge(capsys, "sample", run, "-n", 10, "-o", tmp_path / "s.png", "--temperature", 0.7)
    assert code == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (10, 1, 8, 8) and samples.dtype == np.uint8
    assert set(np.unique(samples)) <= set(range(0, 256, 16))  # 4-bit levels on the 8-bit scale
    grid = np.asarray(Image.open(tmp_path / "s.png"))
    assert grid.shape == (3 * 9 - 1, 4 * 9 - 1)  # 10 images: 4 columns, 3 rows, 1-pixel gaps

    code, out, _ = flowforge(capsys, "plot", run)
    assert code == 0
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "training_curve.png"):
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "realnvp", "--data", "digits", "--out", "{tmp}/r", "--steps", "1"], "models vectors"),
    (["train", "--model", "glow", "--data", "mnist", "--out", "{tmp}/r", "--steps", "1"], "--data-dir"),
    (["train", "--model", "glow", "--data", "moons", "--out", "{tmp}/r", "--steps", "1"], "vector data"),
    (["train", "--model", "glow", "--data", "digits", "--standardize", "--out", "{tmp}/r", "--steps", "1"],
     "does not standardise"),
])
def test_image_mistakes_get_one_line(tmp_path, capsys, args, message):
    code, _, err = flowforge(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 1 and err.count("\n") == 1 and message in err, err


def test_glow_trains_on_a_directory_of_idx_files(tmp_path, capsys):
    write_fake_mnist(tmp_path / "idx", n_train=5020, n_test=30, size=4)
    code, out, err = flowforge(capsys, "train", "--model", "glow", "--data", tmp_path / "idx", "--out", tmp_path / "r",
                               "--steps", 2, "--batch-size", 8, "--hidden", 4, "--model-option", "steps=1",
                               "--model-option", "levels=2", "--no-progress", "--no-plots")
    assert code == 0 and "bits/dim" in out, err
    code, out, _ = flowforge(capsys, "eval", tmp_path / "r", "--json")
    assert code == 0 and json.loads(out)["n"] == 30


def test_glow_trains_on_mnist_named_with_data_dir(tmp_path, capsys):
    write_fake_mnist(tmp_path / "idx", n_train=5020, n_test=30, size=4)
    code, out, err = flowforge(capsys, "train", "--model", "glow", "--data", "mnist", "--data-dir", tmp_path / "idx",
                               "--out", tmp_path / "r", "--steps", 2, "--batch-size", 8, "--hidden", 4,
                               "--model-option", "steps=1", "--model-option", "levels=2", "--no-progress", "--no-plots")
    assert code == 0 and "bits/dim" in out, err
    (tmp_path / "idx").rename(tmp_path / "moved")  # plot: the training curve needs no data
    code, out, err = flowforge(capsys, "plot", tmp_path / "r")
    assert code == 0 and out.strip().endswith("training_curve.png") and err.count("\n") == 1, err
    assert "idx: no such folder" in err and "drew the training curve only" in err


def test_resuming_an_image_run_is_bit_identical(tmp_path):
    from safetensors.torch import load_file

    from flowforge.training import train

    config = TrainConfig(model="glow", data="digits", steps=12, batch_size=16, eval_every=4,
                         model_options={"levels": 2, "steps": 1, "hidden": 4, "bits": 4})
    train(config, tmp_path / "whole", progress_bar=False)
    train(config, tmp_path / "parts", progress_bar=False, stop_after=4)  # ActNorm initialised before the stop
    train(config, tmp_path / "parts", progress_bar=False, resume=True)
    whole, parts = (load_file(tmp_path / d / "checkpoint.safetensors") for d in ("whole", "parts"))
    weights = [k for k in whole if k.startswith("model.")]
    assert weights and all(torch.equal(whole[k], parts[k]) for k in weights)


def test_an_image_array_trains_evaluates_and_takes_back_its_own_samples(tmp_path, capsys):
    # sample -o x.npy wrote (N, C, H, W) uint8 that train and eval refused ("expected a 2-D table")
    from cli_harness import cli

    from flowforge.data import load_splits

    images = load_splits("digits").train[:200].astype(np.uint8)
    np.save(tmp_path / "digits.npy", images)
    small = ["--model", "glow", "--steps", "2", "--eval-every", "2", "--hidden", "8", "--model-option", "levels=1",
             "--model-option", "steps=1", "--no-plots", "--no-progress"]
    code, out, err = cli(capsys, "train", "--data", tmp_path / "digits.npy", "--out", tmp_path / "run", *small)
    assert code == 0 and "bits/dim" in out, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dim"] == [1, 8, 8] and config["train"]["model_options"]["bits"] == 4 and config["data_sha256"]
    code, out, err = cli(capsys, "eval", tmp_path / "run", "--data", tmp_path / "digits.npy", "--json")
    assert code == 0 and json.loads(out)["n"] == 200, err
    assert cli(capsys, "sample", tmp_path / "run", "-n", "40", "-o", tmp_path / "drawn.npy")[0] == 0
    code, _, err = cli(capsys, "train", "--data", tmp_path / "drawn.npy", "--out", tmp_path / "again", *small)
    assert code == 0, err
    before = (tmp_path / "digits.npy").read_bytes()  # the run's own data is never replaced, --force or not
    code, _, err = cli(capsys, "sample", tmp_path / "run", "-n", "4", "-o", tmp_path / "digits.npy", "--force")
    assert code == 1 and "the data it was trained on" in err and (tmp_path / "digits.npy").read_bytes() == before
    for bad, words in ((images[:, :1].repeat(2, 1), "2 channels"), (images / 255, "multiply by 255")):
        np.save(tmp_path / "bad.npy", bad)
        code, _, err = cli(capsys, "train", "--data", tmp_path / "bad.npy", "--out", tmp_path / "bad", *small)
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()
