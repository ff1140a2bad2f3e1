"""Class-conditional Glow on digits: does a sample asked for digit k look like a k?

Trains ``flowforge train --model glow --data digits --context label`` with the default recipe,
draws ``--per-class`` samples of every digit, and classifies them with scikit-learn's logistic
regression fitted to the training split's real digits (the same 4-bit pixels). Prints the share
of samples recognised as the asked class, per class and overall, at each temperature.

    python -m benchmarks.conditional_glow --out runs/digits-cond        # ~2 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from flowforge.cli import main as flowforge
from flowforge.data import load_splits
from flowforge.data.context import one_hot
from flowforge.training import load_run


def recognised(run: Path, per_class: int, temperature: float, seed: int = 0) -> np.ndarray:
    """For each digit, the share of its samples the classifier calls that digit."""
    from sklearn.linear_model import LogisticRegression

    splits = load_splits("digits", context="label")
    classifier = LogisticRegression(max_iter=2000).fit(splits.train.reshape(len(splits.train), -1) / 16,
                                                       splits.context[0].argmax(1))
    flow, _, _ = load_run(run)
    conditions = torch.as_tensor(one_hot(np.arange(10), 10))
    with torch.no_grad():
        x = flow.sample((per_class,), conditions, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    images = flow.to_images(x).numpy().reshape(per_class, 10, -1) / 16  # (n, class, pixels)
    return np.array([(classifier.predict(images[:, k]) == k).mean() for k in range(10)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/digits-cond"))
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="score an existing run instead of training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    if not args.reuse:
        code = flowforge(["train", "--model", "glow", "--data", "digits", "--context", "label", "--out", str(args.out),
                          "--seed", str(args.seed), "--force", "--no-progress", "--no-plots"])
        if code:
            raise SystemExit(code)
    results = json.loads((args.out / "results.json").read_text())
    print(f"glow/digits --context label, seed {args.seed}: test {results['test_bits_per_dim']:.4f} bits/dim, "
          f"train {results['train_seconds']:.0f} s")
    for temperature in (1.0, 0.7):
        shares = recognised(args.out, args.per_class, temperature, args.seed)
        print(f"T = {temperature}: recognised as the asked digit {shares.mean():.1%} "
              f"(per digit {' '.join(f'{s:.2f}' for s in shares)}; lowest {shares.min():.2f})")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
