"""FFJORD on the 2-D toy sets: maximum likelihood against flow matching (and zuko's CNF), each on a fixed time budget.

For every data set and contender it trains a fresh model for ``--budget`` seconds of training time
(flow matching: ``--fm-budget``, by default the same; fused Adam at a constant learning rate or,
with ``--schedule cosine``, warm-up then cosine decay to 0 over each contender's own budget; data
standardised), then reports the test NLL in nats per sample (standardised units, exact trace), the evaluations of f needed for that one test solve, the training
NFE per step (forward + backward) and the seconds per step. Contenders: flowforge's FFJORD trained
by maximum likelihood ("mle"), by maximum likelihood with the RNODE penalties ("mle-rnode",
``--kinetic`` and ``--jacobian``), or by flow matching ("flow-matching", pairs coupled by
``--fm-coupling``, times weighted by ``--fm-time-power``, batches of ``--fm-batch-size``, learning
rate ``--fm-lr``), and zuko's ``CNF`` trained by maximum likelihood ("zuko", exact trace, same
width/depth, same data, batch, optimiser, schedule and budget as "mle"). With ``--ema-decay`` every contender is evaluated with an exponential moving average of its weights.

Every ``--curve-every`` seconds of training the test NLL and its NFE are measured (the clock stops
while they are), so the summary can say when flow matching first reached the MLE model's final test
NLL, as a fraction of the MLE's training time (resolution: one curve interval), and compare the NFE
of the regularised and plain MLE models at equal test NLL (each at the first curve point at or
below the worse of their two final NLLs). Prints a table and a per-data-set summary, and writes
the rows (with the curves) as JSON.

    python benchmarks/ffjord_toy.py --budget 45 --out runs/ffjord_toy.json
    python benchmarks/ffjord_toy.py --schedule cosine --lr 4e-2 --budget 40 --fm-budget 8 --fm-batch-size 1024
    python benchmarks/ffjord_toy.py --budget 5 --datasets moons --n-test 500   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.options import names_option
from flowforge.data import load_splits
from flowforge.models import FFJORD, CNFFlow
from flowforge.training.ema import EMA
from flowforge.training.evaluate import nll_summary
from flowforge.training.loop import cosine_decay, make_optimizer, train_step
from flowforge.transforms import fit_standardization

DATASETS = ("pinwheel", "8gaussians", "checkerboard", "moons")
FLOWFORGE = ("mle", "mle-rnode", "flow-matching")
CONTENDERS = FLOWFORGE + ("zuko",)
WARMUP_FRACTION = 0.05  # of the budget, for --schedule cosine


def standardized_ffjord(train: torch.Tensor, **options) -> CNFFlow:
    """An FFJORD whose Standardize layer carries the training data's statistics, as the trainer sets them."""
    flow = FFJORD(train.shape[1], standardize=True, **options)
    fit_standardization(flow, train)
    return flow


class ZukoCNF:
    """zuko's CNF on data standardised with the training statistics (so its NLL is in standardised units),
    with f's evaluations counted (training forward + backward together, and evaluation apart)."""

    def __init__(self, train: torch.Tensor, args: argparse.Namespace):
        import zuko

        self.batch_size, self.objective = args.batch_size, "mle"
        self.mean, self.std = train.mean(0), train.std(0, unbiased=False)  # as fit_standardization sets them
        self.flow = zuko.flows.CNF(train.shape[1], hidden_features=[args.hidden] * args.depth,
                                   atol=args.zuko_atol, rtol=args.zuko_rtol, exact=True,
                                   activation=ZUKO_ACTIVATIONS[args.zuko_activation])
        transform = self.flow.transform
        self.nfe = {"train": 0, "eval": 0}
        unwrapped = transform.f

        def counted(*a, **k):  # FFJTransform.forward takes partial(self.f, ...), so the instance attribute wins
            self.nfe["train" if transform.training else "eval"] += 1
            return unwrapped(*a, **k)

        transform.f = counted

    def parameters(self):
        return self.flow.parameters()

    def training_loss(self, batch: torch.Tensor) -> torch.Tensor:
        return -self.flow().log_prob((batch - self.mean) / self.std).mean()

    def test_nll(self, points: torch.Tensor) -> tuple[float, int]:
        """Mean NLL of the standardised test points in one solve (eval mode, no graph), and its NFE."""
        self.flow.eval()
        self.nfe["eval"] = 0
        with torch.no_grad():
            nll = float(-self.flow().log_prob((points - self.mean) / self.std).mean())
        self.flow.train()
        return nll, self.nfe["eval"]

    def take_train_nfe(self) -> int:
        n, self.nfe["train"] = self.nfe["train"], 0
        return n


ZUKO_ACTIVATIONS = {"elu": nn.ELU, "tanh": nn.Tanh}


class FlowforgeFFJORD:
    def __init__(self, train: torch.Tensor, contender: str, args: argparse.Namespace):
        self.objective = "flow-matching" if contender == "flow-matching" else "mle"
        rnode = contender == "mle-rnode"
        self.flow = standardized_ffjord(train, hidden=args.hidden, depth=args.depth, trace=args.trace,
                                        kinetic=args.kinetic if rnode else 0.0, jacobian=args.jacobian if rnode else 0.0,
                                        fm_coupling=args.fm_coupling, fm_time_power=args.fm_time_power)
        self.batch_size = args.fm_batch_size if self.objective == "flow-matching" else args.batch_size

    def parameters(self):
        return self.flow.parameters()

    def training_loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.flow.training_loss(batch, self.objective)

    def test_nll(self, points: torch.Tensor) -> tuple[float, int]:
        self.flow.eval()
        summary = nll_summary(self.flow, points, ("nfe",))  # one solve while n_test <= 8192; "nfe" counts it
        self.flow.train()
        return summary["nll"], summary["nfe"]

    def take_train_nfe(self) -> int:
        counts = self.flow.training_metrics()
        return counts["nfe_forward"] + counts["nfe_backward"]


def timed_learning_rate(peak: float, trained: float, budget: float, schedule: str) -> float:
    """``constant``: ``peak`` throughout; ``cosine``: linear warm-up over the first 5% of the budget,
    then a half cosine to 0 at the end of the budget (in seconds of training, not steps)."""
    if schedule == "constant":
        return peak
    warmup = WARMUP_FRACTION * budget
    if trained < warmup:
        return peak * max(trained / warmup, 0.01)
    return cosine_decay(peak, (trained - warmup) / (budget - warmup))


def run(data: str, contender: str, args: argparse.Namespace) -> dict:
    """Train one model for its budget of training time, measuring the test NLL every ``curve_every`` seconds."""
    splits = load_splits(data, args.seed, args.n_train)
    train = torch.from_numpy(splits.train)
    test_points = torch.as_tensor(splits.test[: args.n_test], dtype=torch.float32)
    torch.manual_seed(args.seed)
    model = ZukoCNF(train, args) if contender == "zuko" else FlowforgeFFJORD(train, contender, args)
    fm = contender == "flow-matching"
    lr = args.fm_lr if fm and args.fm_lr is not None else args.lr
    budget = args.fm_budget if fm and args.fm_budget is not None else args.budget
    optimizer = make_optimizer(model.parameters(), lr)  # flowforge's trainer's: fused Adam(W), here without decay
    ema = EMA(model.flow, args.ema_decay)
    generator = torch.Generator().manual_seed(args.seed)
    parameters = list(model.parameters())
    steps, trained, train_nfe, curve = 0, 0.0, 0, []
    next_eval = args.curve_every if args.curve_every > 0 else float("inf")
    while trained < budget:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = timed_learning_rate(lr, trained, budget, args.schedule)
        batch = train[torch.randint(len(train), (model.batch_size,), generator=generator)]
        if train_step(model.training_loss, optimizer, parameters, batch, 10.0)[1]:  # the trainer's own step
            ema.update(steps)
        trained += time.perf_counter() - started
        steps += 1
        if trained >= next_eval and trained < budget:  # the clock is stopped while measuring
            train_nfe += model.take_train_nfe()
            with ema.applied():
                curve.append([round(trained, 2), steps, *model.test_nll(test_points)])
            next_eval = trained + args.curve_every
    train_nfe += model.take_train_nfe()
    with ema.applied():
        nll, nfe_eval = model.test_nll(test_points)
    curve.append([round(trained, 2), steps, nll, nfe_eval])
    library = "zuko" if contender == "zuko" else "flowforge"
    return {"data": data, "objective": model.objective, "contender": contender, "batch_size": model.batch_size, "lr": lr,
            "schedule": args.schedule, "budget": budget,
            "library": library, "steps": steps, "train_seconds": trained, "seconds_per_step": trained / steps,
            "train_nfe_per_step": train_nfe / steps, "test_nll": nll, "nfe_per_eval": nfe_eval,
            "n_test": len(test_points), "curve": curve}


def time_to_reach(curve: list[list[float]], target: float) -> float | None:
    """Training seconds of the first curve point at or below ``target`` (None if never)."""
    return next((seconds for seconds, _, nll, _ in curve if nll <= target), None)


def nfe_at(curve: list[list[float]], target: float) -> int | None:
    """NFE of the test solve at the first curve point at or below ``target`` (None if never)."""
    return next((nfe for _, _, nll, nfe in curve if nll <= target), None)


def summary(rows: list[dict]) -> list[dict]:
    """Per data set: did flow matching reach the MLE's final NLL, and when; does flowforge's best FFJORD beat zuko."""
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        by = {r["contender"]: r for r in rows if r["data"] == data}
        item = {"data": data}
        if "mle" in by and "flow-matching" in by:
            target, seconds = by["mle"]["test_nll"], time_to_reach(by["flow-matching"]["curve"], by["mle"]["test_nll"])
            item["fm_reached_mle_nll"] = seconds is not None
            item["fm_seconds_to_mle_nll"] = seconds
            item["fm_fraction_of_mle_time"] = None if seconds is None else seconds / by["mle"]["train_seconds"]
            item["fm_minus_mle_nll"] = by["flow-matching"]["test_nll"] - target
        if "mle" in by and "mle-rnode" in by:
            target = max(by["mle"]["test_nll"], by["mle-rnode"]["test_nll"])
            item["equal_nll"] = target
            item["mle_nfe_at_equal_nll"] = nfe_at(by["mle"]["curve"], target)
            item["rnode_nfe_at_equal_nll"] = nfe_at(by["mle-rnode"]["curve"], target)
        ours = [by[c] for c in FLOWFORGE if c in by]
        if ours and "zuko" in by:
            best = min(ours, key=lambda r: r["test_nll"])
            item["best_flowforge"] = best["contender"]
            item["best_flowforge_minus_zuko_nll"] = best["test_nll"] - by["zuko"]["test_nll"]
            item["flowforge_beats_zuko"] = best["test_nll"] < by["zuko"]["test_nll"]
        out.append(item)
    return out


def summary_text(items: list[dict]) -> str:
    lines = []
    for item in items:
        parts = []
        if "fm_reached_mle_nll" in item:
            if item["fm_reached_mle_nll"]:
                parts.append(f"flow matching reached the MLE's final NLL after {item['fm_seconds_to_mle_nll']:.1f} s "
                             f"(≤ {item['fm_fraction_of_mle_time']:.0%} of the MLE's time)")
            else:
                parts.append(f"flow matching did not reach the MLE's final NLL "
                             f"(ends {item['fm_minus_mle_nll']:+.3f} nats above it)")
        if item.get("rnode_nfe_at_equal_nll") is not None:
            parts.append(f"at test NLL ≤ {item['equal_nll']:.3f} the regularised MLE solves in "
                         f"{item['rnode_nfe_at_equal_nll']} NFE, the plain MLE in {item['mle_nfe_at_equal_nll']}")
        if "flowforge_beats_zuko" in item:
            verdict = "beats" if item["flowforge_beats_zuko"] else "does not beat"
            parts.append(f"flowforge's best ({item['best_flowforge']}) {verdict} zuko's CNF "
                         f"({item['best_flowforge_minus_zuko_nll']:+.3f} nats)")
        lines.append(f"{item['data']:<13}" + "; ".join(parts) if parts else f"{item['data']:<13}(nothing to compare)")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = [f"{'data':<13}{'contender':<15}{'steps':>7}{'s/step':>9}{'NFE/step':>10}{'test NLL':>10}{'NFE/eval':>10}"]
    for r in rows:
        lines.append(f"{r['data']:<13}{r['contender']:<15}{r['steps']:>7}{r['seconds_per_step']:>9.3f}"
                     f"{r['train_nfe_per_step']:>10.1f}{r['test_nll']:>10.3f}{r['nfe_per_eval']:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per data set and objective")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated, from {','.join(CONTENDERS)}")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--trace", default="exact", choices=("exact", "hutchinson"), help="MLE training trace")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--fm-batch-size", type=int, default=256, help="flow matching's batch size")
    parser.add_argument("--fm-lr", type=float, default=None, help="flow matching's learning rate (default: --lr)")
    parser.add_argument("--fm-budget", type=float, default=None,
                        help="flow matching's seconds of training (default: --budget)")
    parser.add_argument("--schedule", default="constant", choices=("constant", "cosine"),
                        help="learning rate over each contender's budget: constant, or warm-up then cosine to 0")
    parser.add_argument("--fm-coupling", default="independent", choices=("independent", "ot"),
                        help="flow matching's pairing of noise and data")
    parser.add_argument("--fm-time-power", type=float, default=2.0,
                        help="flow matching draws times with density p·s^(p-1) (1: uniform; FFJORD's default 2)")
    parser.add_argument("--kinetic", type=float, default=0.01, help="mle-rnode's kinetic-energy weight")
    parser.add_argument("--jacobian", type=float, default=0.01, help="mle-rnode's Jacobian-norm weight")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="evaluate an EMA of the weights (0: off)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--curve-every", type=float, default=1.0,
                        help="seconds of training between test-NLL measurements (0: only at the end)")
    parser.add_argument("--zuko-activation", default="elu", choices=sorted(ZUKO_ACTIVATIONS),
                        help="zuko's MLP activation (its default ELU; flowforge's FFJORD uses tanh)")
    parser.add_argument("--zuko-atol", type=float, default=1e-5, help="zuko's solver atol (flowforge's default)")
    parser.add_argument("--zuko-rtol", type=float, default=1e-5, help="zuko's solver rtol (flowforge's default)")
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small ODE ops gain nothing from more)")
    parser.add_argument("--out", type=Path, default=Path("runs/ffjord_toy.json"))
    args = parser.parse_args(argv)
    args.contenders = names_option(parser, "--contenders", args.contenders, list(CONTENDERS))
    if not all(b is None or b > 0 for b in (args.budget, args.fm_budget)) or not args.lr > 0 \
            or (args.fm_lr is not None and not args.fm_lr > 0):
        parser.error("--budget, --fm-budget, --lr and --fm-lr must be positive")
    torch.set_num_threads(args.threads)
    rows = []
    for data in args.datasets:
        for contender in args.contenders:
            rows.append(run(data, contender, args))
            print(table(rows[-1:]).splitlines()[-1] if len(rows) > 1 else table(rows), flush=True)
    print()
    print(table(rows))
    items = summary(rows)
    print()
    print(summary_text(items))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                    "rows": rows, "summary": items}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
