"""FFJORD on the 2-D toy sets: maximum likelihood against flow matching, the same wall-clock budget each.

For every data set and objective it trains a fresh FFJORD for ``--budget`` seconds (Adam, constant
learning rate, data standardised), then reports the test NLL in nats per sample (standardised units,
exact trace), the evaluations of f needed for that one test solve, the training NFE per step
(forward + backward) and the seconds per step. Prints a table and writes the rows as JSON.

    python benchmarks/ffjord_toy.py --budget 60 --out runs/ffjord_toy.json
    python benchmarks/ffjord_toy.py --budget 5 --datasets moons --n-test 500   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flowforge.data import load_splits
from flowforge.models import FFJORD, CNFFlow
from flowforge.training.evaluate import nll_summary
from flowforge.transforms import fit_standardization

DATASETS = ("pinwheel", "8gaussians", "checkerboard", "moons")
OBJECTIVES = ("mle", "flow-matching")


def standardized_ffjord(train: torch.Tensor, **options) -> CNFFlow:
    """An FFJORD whose Standardize layer carries the training data's statistics, as the trainer sets them."""
    flow = FFJORD(train.shape[1], standardize=True, **options)
    fit_standardization(flow, train)
    return flow


def run(data: str, objective: str, args: argparse.Namespace) -> dict:
    """Train one model for the budget and measure it."""
    splits = load_splits(data, args.seed, args.n_train)
    train = torch.from_numpy(splits.train)
    torch.manual_seed(args.seed)
    flow = standardized_ffjord(train, hidden=args.hidden, depth=args.depth, trace=args.trace)
    optimizer = torch.optim.Adam(flow.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.budget:
        batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
        loss = flow.training_loss(batch, objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        optimizer.step()
        steps += 1
    seconds = time.perf_counter() - started
    training = flow.training_metrics()
    flow.eval()
    test = nll_summary(flow, splits.test[: args.n_test])  # one solve while n_test <= 8192
    return {"data": data, "objective": objective, "steps": steps, "seconds_per_step": seconds / steps,
            "train_nfe_per_step": (training["nfe_forward"] + training["nfe_backward"]) / steps,
            "test_nll": test["nll"], "nfe_per_eval": flow.training_metrics()["nfe_eval"], "n_test": test["n"]}


def table(rows: list[dict]) -> str:
    lines = [f"{'data':<13}{'objective':<15}{'steps':>7}{'s/step':>9}{'NFE/step':>10}{'test NLL':>10}{'NFE/eval':>10}"]
    for r in rows:
        lines.append(f"{r['data']:<13}{r['objective']:<15}{r['steps']:>7}{r['seconds_per_step']:>9.3f}"
                     f"{r['train_nfe_per_step']:>10.1f}{r['test_nll']:>10.3f}{r['nfe_per_eval']:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per data set and objective")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--trace", default="exact", choices=("exact", "hutchinson"), help="MLE training trace")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small ODE ops gain nothing from more)")
    parser.add_argument("--out", type=Path, default=Path("runs/ffjord_toy.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for data in args.datasets:
        for objective in args.objectives:
            rows.append(run(data, objective, args))
            print(table(rows[-1:]).splitlines()[-1] if len(rows) > 1 else table(rows), flush=True)
    print()
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                    "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
