"""Glow on scikit-learn's 8×8 digits (4-bit) for a fixed budget of steps: test bits/dim.

Runs the library's own trainer (``flowforge.training.train``: AdamW, warm-up then cosine decay,
best validation weights kept) on the fixed digits split, then reports the test bits per dimension
at 4 bits (dequantised with fixed noise; a uniform model scores 4.0) and the wall time.

    python benchmarks/glow_digits.py                       # the full budget (about 2 minutes on 1 thread)
    python benchmarks/glow_digits.py --steps 100 --out /tmp/glow_digits_smoke   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from flowforge.data import load_splits
from flowforge.training import TrainConfig, load_run, nll_summary, train

MODEL = {"levels": 2, "steps": 8, "hidden": 64, "depth": 2, "bits": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500, help="training steps (the budget)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="runs/glow_digits", help="run directory (replaced)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = TrainConfig(model="glow", data="digits", steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         eval_every=min(args.eval_every, args.steps), seed=args.seed, model_options=dict(MODEL))
    print(f"budget: {args.steps} steps of batch {args.batch_size} · Glow {MODEL} · lr {args.lr} · "
          f"{args.threads} thread(s)", flush=True)
    started = time.perf_counter()
    results = train(config, args.out, force=True, progress_bar=False)
    seconds = time.perf_counter() - started
    flow, _, _ = load_run(args.out)
    test = nll_summary(flow, load_splits("digits").test)
    parameters = sum(p.numel() for p in flow.parameters())
    row = {"test_bits_per_dim": round(test["bits_per_dim"], 4), "test_nll_nats": round(test["nll"], 2),
           "parameters": parameters,
           "best_step": results["best_step"], "steps": results["steps"], "train_seconds": results["train_seconds"],
           "wall_seconds": round(seconds, 1), "model": MODEL, "batch_size": args.batch_size, "lr": args.lr}
    print(f"test: {test['bits_per_dim']:.4f} bits/dim (4-bit digits, {test['n']} images) · best step "
          f"{results['best_step']} of {results['steps']} · {seconds:.0f} s")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
