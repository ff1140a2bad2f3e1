"""The default recipes, measured: each model on its natural data with no tuning option, its
training time and its test figure, beside a full-covariance Gaussian fitted to the same
training rows for the tables.

Every case runs the library's own trainer (``flowforge.training.train``) with a config that
leaves each recipe field at ``None``, so the model's recipe (:mod:`flowforge.models.specs`)
fills it exactly as ``flowforge train --model M --data D`` would. ``--set`` overrides a field
(``--set lr=1e-3``, ``--set model_options.levels=2``) to try a candidate recipe.

Tables: scikit-learn's wine (178 × 13) and breast-cancer (569 × 30), written as CSV with their
headers and without the target column, and MINIBOONE's 43 columns from
``../shared/data/miniboone/val.npy`` (3,284 rows: the only large split there; the trainer
splits it 80/10/10 like any user's file, so its figures are not the published MINIBOONE ones).
The Gaussian is the trainer's own baseline (same rows, same standardisation, nats). Each row
gives the trainer's clock, the run's wall time, its CPU seconds (what it costs an idle core: on a
shared machine the wall time is a multiple of it) and the load average when it started. The
process keeps the C heap's freed pages for reuse, as ``flowforge`` does (rows measured before 5
December 2026, 19:35 UTC, did not: image runs then spent up to two thirds of their time in the kernel).

    python -m benchmarks.recipes --cases wine,breast_cancer --seeds 0,1,2
    python -m benchmarks.recipes --cases glow/digits --set model_options.bits=4
    python -m benchmarks.recipes --list
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TABLES = ("wine", "breast_cancer", "miniboone")
CASES = {  # name → (model, data); a table name means the CSV written by write_table
    "realnvp/moons": ("realnvp", "moons"),
    "realnvp/wine": ("realnvp", "wine"),
    "realnvp/breast_cancer": ("realnvp", "breast_cancer"),
    "realnvp/miniboone": ("realnvp", "miniboone"),
    "glow/digits": ("glow", "digits"),
    "realnvp-image/digits": ("realnvp-image", "digits"),
    "ffjord/pinwheel": ("ffjord", "pinwheel"),
    "glow/mnist": ("glow", "mnist"),
    "nsf/moons": ("nsf", "moons"),
    "maf/moons": ("maf", "moons"),
    "nsf/wine": ("nsf", "wine"),
    "maf/wine": ("maf", "wine"),
    "maf/breast_cancer": ("maf", "breast_cancer"),
    "nsf/miniboone": ("nsf", "miniboone"),
    "maf/miniboone": ("maf", "miniboone"),
    "ffjord/wine": ("ffjord", "wine"),
    "ffjord/breast_cancer": ("ffjord", "breast_cancer"),
    "ffjord/miniboone": ("ffjord", "miniboone"),
}


def write_table(name: str, folder: Path) -> Path:
    """``name``'s rows as a CSV with a header row (features only), written once into ``folder``."""
    path = folder / f"{name}.csv"
    if path.exists():
        return path
    import numpy as np

    if name == "miniboone":
        rows = np.load(SHARED / "miniboone" / "val.npy")
        columns = [f"feature_{i}" for i in range(rows.shape[1])]
    else:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{name}")()  # as_frame=True's frame less 'target', without pandas
        rows, columns = bunch.data, list(bunch.feature_names)
    np.savetxt(path, rows, delimiter=",", header=",".join(columns), comments="", fmt="%.17g")
    return path


def parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as JSON where it parses (numbers, true, null), else a string."""
    key, _, raw = text.partition("=")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def case_config(name: str, seed: int, settings: list[tuple[str, object]], folder: Path):
    """The TrainConfig ``flowforge train --model M --data D --seed S`` builds, plus ``settings``."""
    from flowforge.training import TrainConfig

    model, data = CASES[name]
    values: dict = {"model": model, "seed": seed, "device": "cpu"}
    if data in TABLES:
        values["data"] = str(write_table(data, folder))
    elif data == "mnist":
        values.update(data="mnist", data_dir=str(SHARED / "mnist"))
    else:
        values["data"] = data
    options: dict = {}
    for key, value in settings:
        if key.startswith("model_options."):
            options[key.removeprefix("model_options.")] = value
        else:
            values[key] = value
    return TrainConfig(**values, model_options=options)


def load() -> str:
    """The machine's load averages, as ``uptime`` prints them."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average: ")[-1]


def run_case(name: str, seed: int, settings: list[tuple[str, object]], folder: Path) -> dict:
    """Train one case into a scratch run directory; its figures and the recipe it resolved to."""
    from flowforge.training import train

    config = case_config(name, seed, settings, folder)
    run_dir = folder / "runs" / f"{name.replace('/', '_')}_{seed}"
    before = load()
    started, cpu_started = time.perf_counter(), time.process_time()
    results = train(config, run_dir, force=True, progress_bar=False)
    resolved = json.loads((run_dir / "config.json").read_text())["train"]
    row = {"case": name, "seed": seed, "test": results.get("test_bits_per_dim", results["test_nll"]),
           "unit": "bits/dim" if "test_bits_per_dim" in results else "nats",
           "gaussian": results.get("test_gaussian_nll"), "best_step": results["best_step"],
           "steps": results["steps"], "train_s": results["train_seconds"],
           "wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(time.process_time() - cpu_started, 1), "nan_events": results["nan_events"],
           "load": before, "recipe": {k: resolved[k] for k in RECIPE_FIELDS if k in resolved}}
    return row


RECIPE_FIELDS = ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "train_noise", "ema_decay",
                 "eval_every", "patience", "objective", "model_options")


def print_row(row: dict) -> None:
    gaussian = "" if row["gaussian"] is None else f" gaussian {row['gaussian']:.3f}"
    beats = "" if row["gaussian"] is None else ("  beats" if row["test"] < row["gaussian"] else "  LOSES")
    print(f"{row['case']:<24} seed {row['seed']}  test {row['test']:.4f} {row['unit']}{gaussian}{beats}  "
          f"best step {row['best_step']}/{row['steps']}  train {row['train_s']:.1f} s (run {row['wall_s']:.0f} s, "
          f"CPU {row['cpu_s']:.0f} s)  load {row['load']}",
          flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="realnvp/wine,realnvp/breast_cancer,realnvp/miniboone,realnvp/moons,"
                                           "glow/digits,realnvp-image/digits,ffjord/pinwheel",
                        help="comma-separated case names (--list shows them); glow/mnist is left out by default")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field (repeatable): lr=1e-3, model_options.hidden=32")
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also append each row to this JSON-lines file")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{name}: --model {model} --data {data}" for name, (model, data) in CASES.items()))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from flowforge.training.memory import keep_freed_memory

    keep_freed_memory()  # as the command line whose defaults these are

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    settings = [parse_setting(text) for text in args.set]
    cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in cases if name not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; --list shows them")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for name in cases:
            for seed in (int(s) for s in args.seeds.split(",")):
                row = run_case(name, seed, settings, folder)
                print_row(row)
                if args.json:
                    with open(args.json, "a") as handle:
                        handle.write(json.dumps({**row, "settings": dict(settings)}) + "\n")


if __name__ == "__main__":
    main()
