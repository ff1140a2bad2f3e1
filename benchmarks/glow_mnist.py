"""Glow on MNIST (8-bit, 28×28) for a fixed wall-clock budget: test bits/dim against time, and throughput.

Trains with Adam (linear warm-up, then cosine decay over the time budget) on the 55,000 training
images, printing the bits/dim of the first ``--curve-images`` test images (fixed dequantisation
noise) every ``--report-every`` seconds. At the end it reports the bits/dim of all 10,000 test
images, the evaluation throughput (images/s) for them, and the sampling throughput for 1,000 images.
Evaluation time is not counted in the training budget.

    python benchmarks/glow_mnist.py --data-dir /work/shared/data/mnist                 # 15 minutes
    python benchmarks/glow_mnist.py --data-dir /work/shared/data/mnist --budget 60 --report-every 20
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from flowforge.data import load_splits
from flowforge.data.dequantize import nats_to_bits_per_dim
from flowforge.models import Glow
from flowforge.training.evaluate import discrete_log_prob


def test_bits_per_dim(flow, images: torch.Tensor) -> float:
    flow.eval()
    nll = float(-discrete_log_prob(flow, images).mean())
    flow.train()
    return nats_to_bits_per_dim(nll, images[0].numel())


def lr_at(fraction: float, step: int, args: argparse.Namespace) -> float:
    """Linear warm-up over ``--warmup`` steps, then cosine decay to 1% as the budget runs out."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST's four IDX .gz files")
    parser.add_argument("--budget", type=float, default=900, help="training seconds")
    parser.add_argument("--report-every", type=float, default=60, help="seconds between test-curve points")
    parser.add_argument("--curve-images", type=int, default=1000, help="test images for the curve points")
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="flow steps per level")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--coupling", default="tanh", help="tanh, sigmoid (the paper's) or additive")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    splits = load_splits("mnist", data_dir=args.data_dir)
    train, test = torch.from_numpy(splits.train), torch.from_numpy(splits.test)
    flow = Glow((1, 28, 28), levels=args.levels, steps=args.steps, hidden=args.hidden, coupling=args.coupling)
    optimizer = torch.optim.Adam(flow.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"Glow levels={args.levels} steps={args.steps} hidden={args.hidden} coupling={args.coupling} · "
          f"{sum(p.numel() for p in flow.parameters()):,} parameters · batch {args.batch_size} · "
          f"budget {args.budget:.0f} s · {args.threads} thread(s)", flush=True)
    print(f"{'train s':>8} {'step':>6} {'train bpd':>10} {'test bpd':>9}", flush=True)

    curve, running, step, trained, next_report = [], [], 0, 0.0, args.report_every
    while trained < args.budget:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(trained / args.budget, step, args)
        batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
        loss = flow.training_loss(batch, "mle")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 50.0)
        optimizer.step()
        trained += time.perf_counter() - started
        step += 1
        running.append(nats_to_bits_per_dim(loss.item(), 784))
        if trained >= next_report or trained >= args.budget:
            point = {"train_seconds": round(trained, 1), "step": step,
                     "train_bpd": round(sum(running) / len(running), 4),
                     "test_bpd": round(test_bits_per_dim(flow, test[:args.curve_images]), 4)}
            curve.append(point)
            running = []
            next_report += args.report_every
            print(f"{point['train_seconds']:8.1f} {step:6d} {point['train_bpd']:10.4f} {point['test_bpd']:9.4f}",
                  flush=True)

    flow.eval()
    started = time.perf_counter()
    final = test_bits_per_dim(flow, test)
    eval_seconds = time.perf_counter() - started
    started = time.perf_counter()
    flow.sample(1000, generator=torch.Generator().manual_seed(0))
    sample_seconds = time.perf_counter() - started
    summary = {"test_bpd": round(final, 4), "steps": step, "train_seconds": round(trained, 1),
               "eval_images_per_s": round(len(test) / eval_seconds, 1), "eval_seconds": round(eval_seconds, 1),
               "sample_images_per_s": round(1000 / sample_seconds, 1), "sample_seconds": round(sample_seconds, 2),
               "curve": curve, "threads": args.threads,
               "model": {"levels": args.levels, "steps": args.steps, "hidden": args.hidden, "coupling": args.coupling}}
    print(f"test: {final:.4f} bits/dim on all {len(test)} test images after {step} steps ({trained:.0f} s) · "
          f"evaluation {summary['eval_images_per_s']:.0f} images/s · sampling 1,000 images in "
          f"{sample_seconds:.2f} s ({summary['sample_images_per_s']:.0f} images/s)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
