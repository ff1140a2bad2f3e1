"""Glow on MNIST (8-bit, 28×28) for a fixed wall-clock budget: test bits/dim against time, and throughput.

Trains one library's multi-scale Glow (``--library flowforge`` or ``normflows``, the latter built as in
``glow_digits.py`` from normflows' own pieces, of the same size) with Adam (linear warm-up, then cosine
decay over the time budget) on the 55,000 training images, printing the bits/dim of the first
``--curve-images`` test images (fixed dequantisation noise) every ``--report-every`` seconds. At the end
it reports the bits/dim of all 10,000 test images, the evaluation throughput (images/s) for them, and
the sampling throughput for 1,000 images. Evaluation time is not counted in the training budget. Both
libraries see the same batches, the same dequantised pixels ((level + u) / 256 − ½) and the same test
noise, and are scored by bpd = (NLL_continuous + D·log 256) / (D·ln 2).

    python -m benchmarks.glow_mnist --data-dir /work/shared/data/mnist                 # 15 minutes
    python -m benchmarks.glow_mnist --data-dir /work/shared/data/mnist --budget 3600 --library normflows \\
        --report-every 300 --out docs/glow_mnist_normflows.json
    python -m benchmarks.glow_mnist --plot docs/glow_mnist_*.json --figure docs/images/glow_mnist_curve.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from benchmarks.glow_digits import continuous, normflows_bits_per_dim, normflows_glow
from flowforge.atomic import atomic_target
from flowforge.data import load_splits
from flowforge.distributions.dequantization import nats_to_bits_per_dim
from flowforge.models import Glow
from flowforge.training.evaluate import discrete_log_prob
from flowforge.training.loop import train_step

BITS = 8
LIBRARIES = ("flowforge", "normflows")


class FlowforgeGlow:
    def __init__(self, args: argparse.Namespace):
        self.model = Glow((1, 28, 28), levels=args.levels, steps=args.steps, hidden=args.hidden,
                          coupling=args.coupling, bits=BITS)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.training_loss(batch, "mle")

    def bits_per_dim(self, images: torch.Tensor) -> float:
        self.model.eval()
        nll = float(-discrete_log_prob(self.model, images).mean())
        self.model.train()
        return nats_to_bits_per_dim(nll, images[0].numel())

    def sample(self, n: int) -> None:
        self.model.sample(n, generator=torch.Generator().manual_seed(0))


class NormflowsGlow:
    def __init__(self, args: argparse.Namespace):
        self.model = normflows_glow((1, 28, 28), args.levels, args.steps, args.hidden)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        # forward_kld is −mean log p of the continuous pixels; adding the constant D·log 256 of the bin
        # volume (no effect on gradients) puts it on flowforge's scale, the discrete NLL bound
        return self.model.forward_kld(continuous(batch, BITS)) + batch[0].numel() * math.log(2 ** BITS)

    def bits_per_dim(self, images: torch.Tensor) -> float:
        return normflows_bits_per_dim(self.model, images, BITS)[0]

    def sample(self, n: int) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model.sample(n)
        self.model.train()


def lr_at(fraction: float, step: int, args: argparse.Namespace) -> float:
    """Linear warm-up over ``--warmup`` steps, then cosine decay to 1% as the budget runs out."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding MNIST's four IDX .gz files (needed to train)")
    parser.add_argument("--library", default="flowforge", choices=LIBRARIES)
    parser.add_argument("--budget", type=float, default=900, help="training seconds")
    parser.add_argument("--report-every", type=float, default=60, help="seconds between test-curve points")
    parser.add_argument("--curve-images", type=int, default=1000, help="test images for the curve points")
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="flow steps per level")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--coupling", default="tanh", help="flowforge only: tanh, sigmoid (the paper's) or additive")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", help="also write the summary JSON here")
    parser.add_argument("--plot", nargs="+", metavar="JSON", help="draw these runs' curves instead of training")
    parser.add_argument("--figure", default="glow_mnist_curve.png", help="where --plot writes its figure")
    args = parser.parse_args()
    if not args.plot and not args.data_dir:
        parser.error("--data-dir is needed to train (or give --plot JSON ...)")
    return args


def plot_curves(paths: list[str], figure: str) -> None:
    """Test bits/dim against training seconds, one line per summary JSON, the full-test figure marked at the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for path in paths:
        run = json.loads(Path(path).read_text())
        seconds = [p["train_seconds"] / 60 for p in run["curve"]]
        line, = ax.plot(seconds, [p["test_bpd"] for p in run["curve"]], marker="o", ms=3,
                        label=f"{run['library']} ({run['steps']:,} steps): {run['test_bpd']:.3f} on all 10,000")
        ax.plot(seconds[-1], run["test_bpd"], marker="*", ms=12, color=line.get_color())
    ax.set_xlabel(f"training minutes ({run['threads']} thread, batch {run['batch_size']})")
    ax.set_ylabel(f"test bits/dim (first {run.get('curve_images', 1000):,} test images; ★ all 10,000)")
    ax.set_title("Glow on MNIST, same budget on the same CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_target(figure) as tmp:
        fig.savefig(tmp, dpi=110)
    print(f"wrote {figure}")


def main() -> None:
    args = parse_args()
    if args.plot:
        return plot_curves(args.plot, args.figure)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    splits = load_splits("mnist", data_dir=args.data_dir)
    train, test = torch.from_numpy(splits.train), torch.from_numpy(splits.test)
    glow = (FlowforgeGlow if args.library == "flowforge" else NormflowsGlow)(args)
    optimizer = torch.optim.Adam(glow.model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    parameters = sum(p.numel() for p in glow.model.parameters())
    print(f"{args.library} Glow levels={args.levels} steps={args.steps} hidden={args.hidden} · {parameters:,} "
          f"parameters · batch {args.batch_size} · budget {args.budget:.0f} s · {args.threads} thread(s)", flush=True)
    print(f"{'train s':>8} {'step':>6} {'train bpd':>10} {'test bpd':>9}", flush=True)

    parameter_list = list(glow.model.parameters())
    curve, running, step, trained, next_report, skipped = [], [], 0, 0.0, args.report_every, 0
    while trained < args.budget:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(trained / args.budget, step, args)
        batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
        loss, finite = train_step(glow.loss, optimizer, parameter_list, batch, 50.0)  # the trainer's own step
        if finite:
            running.append(nats_to_bits_per_dim(loss.item(), 784))
        else:
            skipped += 1  # counted and reported: a step with a non-finite loss or gradient is not applied
        trained += time.perf_counter() - started
        step += 1
        if trained >= next_report or trained >= args.budget:
            point = {"train_seconds": round(trained, 1), "step": step,
                     "train_bpd": round(sum(running) / max(1, len(running)), 4),
                     "test_bpd": round(glow.bits_per_dim(test[:args.curve_images]), 4)}
            curve.append(point)
            running = []
            next_report += args.report_every
            print(f"{point['train_seconds']:8.1f} {step:6d} {point['train_bpd']:10.4f} {point['test_bpd']:9.4f}",
                  flush=True)

    started = time.perf_counter()
    final = glow.bits_per_dim(test)
    eval_seconds = time.perf_counter() - started
    started = time.perf_counter()
    glow.sample(1000)
    sample_seconds = time.perf_counter() - started
    summary = {"library": args.library, "test_bpd": round(final, 4), "steps": step, "skipped_steps": skipped,
               "train_seconds": round(trained, 1), "parameters": parameters,
               "eval_images_per_s": round(len(test) / eval_seconds, 1), "eval_seconds": round(eval_seconds, 1),
               "sample_images_per_s": round(1000 / sample_seconds, 1), "sample_seconds": round(sample_seconds, 2),
               "curve": curve, "curve_images": args.curve_images, "threads": args.threads, "batch_size": args.batch_size, "lr": args.lr,
               "model": {"levels": args.levels, "steps": args.steps, "hidden": args.hidden,
                         "coupling": args.coupling if args.library == "flowforge" else "normflows GlowBlock"}}
    print(f"test: {final:.4f} bits/dim on all {len(test)} test images after {step} steps ({trained:.0f} s) · "
          f"evaluation {summary['eval_images_per_s']:.0f} images/s · sampling 1,000 images in "
          f"{sample_seconds:.2f} s ({summary['sample_images_per_s']:.0f} images/s)")
    print(json.dumps(summary))
    if args.out:
        with atomic_target(args.out) as path:
            path.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
