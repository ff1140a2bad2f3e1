"""The book's RealNVP recipe run in full, beside flowforge's default recipe on the same data.

    OMP_NUM_THREADS=2 python -m benchmarks.book_recipe --out runs/book_recipe

Trains ``RECIPES["book"]`` (flowforge.models.recipes) in stages of 10 epochs, keeping at each stop
f(X) of 2,000 training points and g(Z) of 2,000 fixed latent draws (the book's figure at
intervals; ``snapshots.npz``), then the default recipe (``flowforge train --data moons``), and
writes both results with their wall-clock times to ``OUT/book_recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from flowforge.data import load_splits
from flowforge.models.recipes import RECIPES
from flowforge.plots import latent_and_generated
from flowforge.training import TrainConfig, train
from flowforge.training.stages import train_in_stages

SNAPSHOT_POINTS = 2000


def run_book(out: Path, overrides: dict) -> dict:
    config = TrainConfig(**{**RECIPES["book"], **overrides})
    data = load_splits(config.data, config.seed, config.n_train).train[:SNAPSHOT_POINTS]
    steps, latents, generated = [], [], []
    started = time.perf_counter()
    for step, flow, results in train_in_stages(config, out / "book", every=config.eval_every, force=True):
        latent, _, points = latent_and_generated(flow, data, SNAPSHOT_POINTS)
        steps.append(step), latents.append(latent), generated.append(points)
        print(f"step {step}: best test NLL so far {results['test_nll']:.4f}", flush=True)
    wall = time.perf_counter() - started
    np.savez_compressed(out / "snapshots.npz", steps=np.array(steps), data=data, latent=np.stack(latents),
                        generated=np.stack(generated))
    return {**results, "wall_seconds": round(wall, 1), "config": config.to_dict()}


def run_default(out: Path) -> dict:
    started = time.perf_counter()
    results = train(TrainConfig(data="moons"), out / "default", force=True, progress_bar=False)
    return {**results, "wall_seconds": round(time.perf_counter() - started, 1)}


def _results_so_far(run: Path, flow, config: TrainConfig, records: list[dict]) -> dict:
    """The run's results.json, or, for a run killed mid-stage (a resume removes it until the stage
    ends), its best weights scored on the test split as the trainer would."""
    from flowforge.training import nll_summary

    if (run / "results.json").is_file():
        return json.loads((run / "results.json").read_text())
    test = nll_summary(flow, load_splits(config.data, config.seed, config.n_train).test)
    finite = [r for r in records if math.isfinite(r["val_nll"])]  # as the trainer counts them
    if not finite:
        raise SystemExit(f"{run}: no finite validation NLL recorded yet; nothing to summarise")
    best = min(finite, key=lambda r: r["val_nll"])  # the first of equals, as the trainer's strict <
    return {"test_nll": test["nll"], "test_nll_stderr": test["nll_stderr"], "best_step": best["step"]}


def summarise(out: Path, images: Path) -> dict:
    """A book run's figures for docs/ (the 2×2 figure of the best weights, the loss curve, and the GIF
    of the stops when the run finished) and its summary: the best weights' test NLL and L2 term, the
    steps reached (a run stopped early is summarised as far as it got) and the training seconds."""
    from flowforge.plots import chapter_figure, save_animation, save_figure, training_animation, training_curve
    from flowforge.plots.two_d import read_metrics
    from flowforge.training import load_run
    from flowforge.training.regularization import l2_penalty

    flow, config, _ = load_run(out / "book")
    records = read_metrics(out / "book" / "metrics.jsonl")
    results = _results_so_far(out / "book", flow, config, records)
    data = load_splits(config.data, config.seed, config.n_train).train[:SNAPSHOT_POINTS]
    images.mkdir(parents=True, exist_ok=True)
    save_figure(chapter_figure(flow, data), images / "book_recipe_flow.png")
    save_figure(training_curve(records, config), images / "book_recipe_curve.png")
    if (out / "snapshots.npz").is_file():
        snapshots = np.load(out / "snapshots.npz")
        z = flow.base.sample(SNAPSHOT_POINTS, generator=torch.Generator().manual_seed(0)).numpy()
        keep = slice(None, None, max(1, len(snapshots["steps"]) // 15))  # about 15 frames
        movie = training_animation(list(snapshots["steps"][keep]), snapshots["data"], z,
                                   list(snapshots["latent"][keep]), list(snapshots["generated"][keep]))
        save_animation(movie, images / "book_recipe_training.gif", fps=3)
    return {"test_nll": results["test_nll"], "test_nll_stderr": results["test_nll_stderr"],
            "best_step": results["best_step"], "steps_done": records[-1]["step"], "steps": config.steps,
            "train_seconds": records[-1]["time"], "l2_term": float(l2_penalty(flow, config.l2).detach()),
            "first_train_loss": records[0]["train_nll"], "last_train_loss": records[-1]["train_nll"],
            "val_nll": [(r["step"], round(r["val_nll"], 4)) for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/book_recipe"))
    parser.add_argument("--l2", type=float, default=None, help="override the recipe's L2 penalty")
    parser.add_argument("--steps", type=int, default=None, help="a shorter run (a smoke test of this script)")
    parser.add_argument("--summarise", type=Path, default=None, metavar="IMAGES",
                        help="only summarise the book run in --out (finished or stopped), its figures into IMAGES")
    args = parser.parse_args()
    if args.summarise:
        print(json.dumps(summarise(args.out, args.summarise), indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = {key: value for key, value in (("l2", args.l2), ("steps", args.steps)) if value is not None}
    report = {"threads": torch.get_num_threads(), "book": run_book(args.out, overrides),
              "default": run_default(args.out)}
    (args.out / "book_recipe.json").write_text(json.dumps(report, indent=1))
    for name in ("book", "default"):
        r = report[name]
        print(f"{name}: test NLL {r['test_nll']:.4f} ± {r['test_nll_stderr']:.4f} · best step {r['best_step']} · "
              f"train {r['train_seconds']:.0f} s · wall {r['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
