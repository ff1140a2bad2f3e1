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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/book_recipe"))
    parser.add_argument("--l2", type=float, default=None, help="override the recipe's L2 penalty")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = {} if args.l2 is None else {"l2": args.l2}
    report = {"threads": torch.get_num_threads(), "book": run_book(args.out, overrides),
              "default": run_default(args.out)}
    (args.out / "book_recipe.json").write_text(json.dumps(report, indent=1))
    for name in ("book", "default"):
        r = report[name]
        print(f"{name}: test NLL {r['test_nll']:.4f} ± {r['test_nll_stderr']:.4f} · best step {r['best_step']} · "
              f"train {r['train_seconds']:.0f} s · wall {r['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
