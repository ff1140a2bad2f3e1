"""Neural spline flows and MAFs: flowforge against zuko and nflows on densities with a known truth
(SLCP's likelihood, checkerboard, 8gaussians), on MINIBOONE, and in throughput (issue 14).

    python -m benchmarks.tabular                    # everything, 30 s per run (about 75 minutes); writes docs/tabular.md
    python -m benchmarks.tabular --targets slcp-10k,slcp-100k,miniboone --throughput-repeats 0   # the criteria's runs
    python -m benchmarks.tabular --budget 60        # longer training (seconds per SLCP/MINIBOONE run)
    python -m benchmarks.tabular --quick            # a smoke run: one seed, 2-second budgets

Every measurement runs in its own process on one torch thread; contenders take turns in an order
rotated from one target and seed to the next. Each contender trains with flowforge's trainer's own
``train_step`` on the same standardised batches for the same wall-clock budget (evaluation not
counted); every one is evaluated on the validation split at the same clock points and its best
validation weights are scored on the test split. See :mod:`benchmarks.tabular_contenders` for the
contenders and their training conventions, :mod:`benchmarks.densities` for the true densities.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.densities import SLCP_DIM, SLCP_THETA, TOY_LOG_DENSITIES, slcp_log_likelihood, slcp_simulate

DOCS = Path(__file__).resolve().parent.parent / "docs"
MINIBOONE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "miniboone"
SIZE = {"layers": 5, "hidden": 128, "depth": 2, "bins": 8}  # flowforge's NSF recipe for tables over 2,000 rows
BATCH = 256  # flowforge's table and toy recipes' batch at these sizes, for every contender
SLCP_TEST = 10_000
VALIDATION_FRACTION = 0.1
TARGETS = ("slcp-10k", "slcp-100k", "miniboone", "checkerboard", "8gaussians")
TOY_BUDGET_FRACTION = 0.5  # the 2-D sets train for half the budget


@dataclass
class Target:
    """Standardised float32 splits, each row [x | c]; the truth's log p(x | c) on the test rows (data
    units, float64; None when unknown); Σ log σ of x's standardisation; and what a recipe needs."""
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_truth: np.ndarray | None
    log_scale: float
    dim: int
    context_dim: int
    kind: str

    @property
    def rows(self) -> int:
        return len(self.train)


def standardised(train: np.ndarray, val: np.ndarray, test: np.ndarray, dim: int, truth, kind: str) -> Target:
    """x and c standardised with the training rows' mean and std; a density in those units is the
    data's times Π σ_x, so log q(x) = log q_std(u) − Σ log σ_x (the Jacobian of x's standardisation)."""
    mean, std = train.mean(0), train.std(0)
    if not (std > 0).all():
        raise ValueError("a constant training column cannot be standardised")
    out = [((a - mean) / std).astype(np.float32) for a in (train, val, test)]
    return Target(*out, truth, float(np.log(std[:dim]).sum()), dim, train.shape[1] - dim, kind)


def load_target(name: str, seed: int) -> Target:
    if name.startswith("slcp-"):
        n = {"slcp-10k": 10_000, "slcp-100k": 100_000}[name]
        theta, x = slcp_simulate(n, np.random.default_rng([seed, n]))
        test_theta, test_x = slcp_simulate(SLCP_TEST, np.random.default_rng([seed, 0]))  # one test set per seed
        rows, test = np.concatenate([x, theta], 1), np.concatenate([test_x, test_theta], 1)
        n_val = int(n * VALIDATION_FRACTION)
        return standardised(rows[n_val:], rows[:n_val], test, SLCP_DIM, slcp_log_likelihood(test_x, test_theta),
                            "table")
    if name == "miniboone":
        rows = np.load(MINIBOONE / "val.npy")[np.random.default_rng(seed).permutation(3284)]
        n_val = int(len(rows) * VALIDATION_FRACTION)
        return standardised(rows[n_val:], rows[:n_val], np.load(MINIBOONE / "test.npy"), rows.shape[1], None, "table")
    if name in TOY_LOG_DENSITIES:
        from flowforge.data import load_splits

        s = load_splits(name, seed)  # 3,000 training points from seed, validation and test from others
        test = s.test.astype(np.float32).astype(np.float64)  # the truth at exactly the points scored
        return standardised(s.train.astype(np.float64), s.val.astype(np.float64), test, 2,
                            TOY_LOG_DENSITIES[name](test), "toy")
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def _log_q(model, rows, chunk: int = 8192):
    """log q of standardised rows in chunks, float64 (the model's weights as they are, in evaluation mode)."""
    import torch

    from flowforge.nets import evaluation_mode

    with torch.no_grad(), evaluation_mode(model.module):
        return torch.cat([model.log_prob(torch.from_numpy(rows[i:i + chunk])).double()
                          for i in range(0, len(rows), chunk)]).numpy()


def _mean_nll(model, rows) -> float:
    value = float(-_log_q(model, rows).mean())
    return value if math.isfinite(value) else math.inf


def train_task(spec: dict) -> dict:
    """Train one contender on one target for ``budget_s`` seconds (evaluations not counted); score the
    best validation weights on the test rows."""
    import torch

    from benchmarks.tabular_contenders import build
    from benchmarks.worker import _batches, _train_step

    seed = spec["seed"]
    target = load_target(spec["target"], seed)
    torch.manual_seed(seed)
    model = build(spec["contender"], dim=target.dim, context_dim=target.context_dim, data_kind=target.kind,
                  rows=target.rows, **spec["size"])
    parameters = list(model.parameters())
    optimizer = model.optimizer(parameters, lr=model.lr)
    batches = _batches(torch.from_numpy(target.train), seed, spec["batch_size"])
    budget, evals = spec["budget_s"], spec["evals"]
    clock, step, curve, best = 0.0, 0, [], (math.inf, None, 0.0)
    for k in range(1, evals + 1):
        started = time.perf_counter()
        while clock + time.perf_counter() - started < budget * k / evals:
            if model.learning_rate is not None:
                fraction = (clock + time.perf_counter() - started) / budget
                for group in optimizer.param_groups:
                    group["lr"] = model.learning_rate(step, fraction)
            step += 1
            _train_step(model, optimizer, parameters, next(batches), step)
        clock += time.perf_counter() - started
        with model.evaluating():
            val = _mean_nll(model, target.val)
            if val < best[0]:
                best = (val, copy.deepcopy(model.module.state_dict()), clock)
        curve.append((round(clock, 2), step, val))
    if best[1] is not None:
        model.module.load_state_dict(best[1])  # the evaluated weights (a weight average's, where used)
    log_q = _log_q(model, target.test) - target.log_scale  # data units
    finite = np.isfinite(log_q)
    out = {"steps": step, "train_s": round(clock, 2), "best_val": best[0], "best_at_s": round(best[2], 2),
           "test_nll": float(-log_q.mean()) if finite.all() else math.inf, "non_finite": int((~finite).sum()),
           "params": sum(p.numel() for p in parameters), "curve": curve}
    if target.test_truth is not None:
        gap = target.test_truth - log_q
        out.update(gap=float(gap.mean()) if finite.all() else math.inf,
                   gap_stderr=float(gap.std() / math.sqrt(len(gap))) if finite.all() else math.inf,
                   gap_median=float(np.median(gap)), truth_nll=float(-target.test_truth.mean()))
    return out


def throughput_task(spec: dict) -> dict:
    """Train steps/s (batch 256), log_prob points/s (8,192 per call) and samples/s (``sample_points`` per
    call, one per context row)."""
    import torch

    from benchmarks.tabular_contenders import build
    from benchmarks.worker import _batches, _rate, _train_step

    target = load_target(spec["target"], 0)
    torch.manual_seed(0)
    model = build(spec["contender"], dim=target.dim, context_dim=target.context_dim, data_kind=target.kind,
                  rows=target.rows, **spec["size"])
    parameters = list(model.parameters())
    optimizer = model.optimizer(parameters, lr=model.lr)
    batches = _batches(torch.from_numpy(target.train), 0, spec["batch_size"])
    for step in range(20):
        _train_step(model, optimizer, parameters, next(batches), step)
    steps, started = spec["steps"], time.perf_counter()
    for step in range(steps):
        _train_step(model, optimizer, parameters, next(batches), step)
    steps_per_s = steps / (time.perf_counter() - started)
    points = torch.from_numpy(target.test[:8192])
    context = points[:, target.dim:] if target.context_dim else None
    with torch.no_grad(), model.evaluating():  # as each library evaluates (flowforge: float32 networks)
        log_prob_rate = _rate(lambda: model.log_prob(points), len(points))
        n = spec["sample_points"]
        sample_rate = _rate(lambda: model.sample(n, None if context is None else context[:n]), n)
    return {"train_steps_per_s": steps_per_s, "log_prob_per_s": log_prob_rate, "samples_per_s": sample_rate}


# ---- the driver ------------------------------------------------------------------------------------

def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average: ")[-1]


def measure(spec: dict) -> dict:
    """``spec`` measured in a fresh process on one thread; a failure is recorded, not raised."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load = load_average()
    result = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps({**spec, "threads": 1})],
                            capture_output=True, text=True, env=env)
    if result.returncode:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return {**spec, "error": lines[-1][:300], "load": load}
    return {**json.loads(result.stdout), "load": load}


def rotated(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def run_accuracy(args, contenders: list[str], log) -> list[dict]:
    rows = []
    for seed in args.seeds:
        for t, target in enumerate(args.targets):
            budget = args.budget * (TOY_BUDGET_FRACTION if target in TOY_LOG_DENSITIES else 1.0)
            for name in rotated(contenders, seed * len(args.targets) + t):
                row = measure({"task": "benchmarks.tabular:train_task", "contender": name, "target": target,
                               "seed": seed, "budget_s": budget, "evals": args.evals, "batch_size": BATCH,
                               "size": SIZE})
                rows.append(row)
                log(row)
    return rows


THROUGHPUT_SHAPES = {"slcp-10k": "SLCP (x 8-D given θ 5-D)", "miniboone": "MINIBOONE (43-D)"}
SAMPLE_POINTS = {"slcp-10k": 8192, "miniboone": 1024}  # an autoregressive 43-D sampler takes ~1 min for 8,192


def run_throughput(args, contenders: list[str], log) -> list[dict]:
    rows = []
    for shape in THROUGHPUT_SHAPES:
        names = contenders if shape == "slcp-10k" else [n for n in contenders if "NSF" in n]
        for r in range(args.throughput_repeats):
            for name in rotated(names, r):
                row = measure({"task": "benchmarks.tabular:throughput_task", "contender": name, "target": shape,
                               "batch_size": BATCH, "size": SIZE, "steps": args.throughput_steps, "repeat": r,
                               "sample_points": SAMPLE_POINTS[shape]})
                rows.append(row)
                log(row)
    return rows


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['contender']:<20} {row.get('target', '')} FAILED: {row['error']}  (load {row['load']})"
    if "gap" in row or "test_nll" in row:
        figure = f"gap {row['gap']:.4f} ± {row['gap_stderr']:.4f}" if "gap" in row else f"test NLL {row['test_nll']:.4f}"
        return (f"{row['contender']:<20} {row['target']:<13} seed {row['seed']}  {figure}  steps {row['steps']:,} "
                f"best at {row['best_at_s']:.0f}/{row['train_s']:.0f} s  (load {row['load']})")
    return (f"{row['contender']:<20} {row['target']:<13} {row['train_steps_per_s']:.1f} steps/s  "
            f"{row['log_prob_per_s']:,.0f} log_prob/s  {row['samples_per_s']:,.0f} samples/s  (load {row['load']})")


# ---- the report --------------------------------------------------------------------------------------

def _cell(rows: list[dict], key: str) -> str:
    values = [r.get(key, math.inf) if "error" not in r else None for r in sorted(rows, key=lambda r: r["seed"])]
    text = " / ".join("failed" if v is None else "inf" if not math.isfinite(v) else f"{v:.3f}" for v in values)
    ok = [v for v in values if v is not None]
    return f"{text} ({statistics.mean(ok):.3f})" if len(ok) > 1 and all(map(math.isfinite, ok)) else text


def _select(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def accuracy_tables(rows: list[dict], contenders: list[str], targets: list[str]) -> list[str]:
    lines = []
    headings = {"slcp-10k": "SLCP, 10,000 simulations: gap E[log p − log q] (nats)",
                "slcp-100k": "SLCP, 100,000 simulations: gap E[log p − log q] (nats)",
                "miniboone": "MINIBOONE: test NLL (nats, the file's units)",
                "checkerboard": "checkerboard: gap to the true NLL (nats)",
                "8gaussians": "8gaussians: gap to the true NLL (nats)"}
    for target in targets:
        chosen = _select(rows, target=target)
        if not chosen:
            continue
        key = "test_nll" if target == "miniboone" else "gap"
        lines += [f"### {headings[target]}", "", "| contender | seeds 0 / 1 / 2 (mean) | steps | best validation at (s) | parameters |",
                  "|---|---|---|---|---|"]
        for name in contenders:
            mine = _select(chosen, contender=name)
            ok = [r for r in mine if "error" not in r]
            steps = " / ".join(f"{r['steps']:,}" for r in sorted(ok, key=lambda r: r["seed"]))
            at = " / ".join(f"{r['best_at_s']:.0f}" for r in sorted(ok, key=lambda r: r["seed"]))
            params = f"{ok[0]['params']:,}" if ok else ""
            lines.append(f"| {name} | {_cell(mine, key)} | {steps} | {at} | {params} |")
        truth = {r["seed"]: r["truth_nll"] for r in chosen if "truth_nll" in r}
        if truth:
            lines.append("")
            lines.append(f"The truth's test NLL: {' / '.join(f'{truth[seed]:.3f}' for seed in sorted(truth))} "
                         "(each seed's test set, in seed order).")
        lines.append("")
    return lines


def throughput_tables(rows: list[dict]) -> list[str]:
    lines = []
    keys = ("train_steps_per_s", "log_prob_per_s", "samples_per_s")
    for shape, title in THROUGHPUT_SHAPES.items():
        chosen = [r for r in _select(rows, target=shape) if "error" not in r]
        if not chosen:
            continue
        names = list(dict.fromkeys(r["contender"] for r in chosen))
        medians = {n: {k: statistics.median(r[k] for r in _select(chosen, contender=n)) for k in keys} for n in names}
        base = medians.get("zuko NSF")
        lines += [f"### {title}: batch 256; calls of 8,192 points (log_prob) and {SAMPLE_POINTS[shape]:,} (sample)", "",
                  "| contender | train steps/s | log_prob points/s | samples/s | ÷ zuko NSF (steps, log_prob, samples) |",
                  "|---|---|---|---|---|"]
        for n in names:
            m = medians[n]
            ratio = " / ".join(f"{m[k] / base[k]:.2f}×" for k in keys) if base else ""
            lines.append(f"| {n} | {m['train_steps_per_s']:.1f} | {m['log_prob_per_s']:,.0f} | "
                         f"{m['samples_per_s']:,.0f} | {ratio} |")
        lines.append("")
    return lines


def criteria(rows: list[dict], throughput: list[dict]) -> list[str]:
    """The issue's three benchmark criteria, checked on these rows."""
    from benchmarks.tabular_contenders import library

    def best(target, seed, ours: bool, key):
        values = [r.get(key, math.inf) if "error" not in r else math.inf for r in _select(rows, target=target, seed=seed)
                  if (library(r["contender"]) == "flowforge") == ours]
        return min(values) if values else None

    lines = ["| criterion | measured | met |", "|---|---|---|"]
    for target in ("slcp-10k", "slcp-100k"):
        seeds = sorted({r["seed"] for r in _select(rows, target=target)})
        if not seeds:
            continue
        pairs = [(best(target, s, True, "gap"), best(target, s, False, "gap")) for s in seeds]
        text = "; ".join(f"seed {s}: {a:.3f} vs {b:.3f}" for s, (a, b) in zip(seeds, pairs))
        met = all(a < b for a, b in pairs)
        lines.append(f"| {target}: flowforge's best gap < best peer's, every seed | {text} | {'yes' if met else 'no'} |")
    seeds = sorted({r["seed"] for r in _select(rows, target="miniboone")})
    if seeds:
        pairs = [(best("miniboone", s, True, "test_nll"), best("miniboone", s, False, "test_nll")) for s in seeds]
        text = "; ".join(f"seed {s}: {a:.3f} vs {b:.3f}" for s, (a, b) in zip(seeds, pairs))
        lines.append(f"| MINIBOONE: flowforge's best test NLL < every peer's, every seed | {text} | "
                     f"{'yes' if all(a < b for a, b in pairs) else 'no'} |")
    for shape in THROUGHPUT_SHAPES:
        chosen = [r for r in _select(throughput, target=shape) if "error" not in r]
        ours, zuko = _select(chosen, contender="flowforge NSF"), _select(chosen, contender="zuko NSF")
        if ours and zuko:
            ratios = [statistics.median(r[k] for r in ours) / statistics.median(r[k] for r in zuko)
                      for k in ("train_steps_per_s", "log_prob_per_s")]
            lines.append(f"| {shape}: flowforge NSF ≥ 1.3× zuko NSF in train steps/s and log_prob/s | "
                         f"{ratios[0]:.2f}× and {ratios[1]:.2f}× | {'yes' if min(ratios) >= 1.3 else 'no'} |")
    return lines


NOTES_MARKER = "<!-- notes: kept when the tables are regenerated -->"


def markdown(report: dict, notes: str) -> str:
    v, a = report["versions"], report["accuracy"]
    throughput = (f" Throughput: `{report['command']}` on {report['date']} ({report['minutes']:.0f} minutes; load "
                  f"{report['load_start']} / {report['load_end']})." if report["command"] != a["command"] else "")
    lines = ["# Neural spline flows and MAFs against zuko and nflows", "",
             f"Accuracy: `{a['command']}` on {a['date']} ({a['minutes']:.0f} minutes; load average at the start / "
             f"end {a['load_start']} / {a['load_end']}).{throughput} {v['cpu_count']} cores, one torch thread per "
             "run; " + ", ".join(f"{k} {v[k]}" for k in ("flowforge", "torch", "zuko", "nflows", "python")) +
             ". Each run's own load average is in `docs/tabular.json`.", "",
             PROTOCOL.format(budget=a["budget_s"], toy=a["budget_s"] * TOY_BUDGET_FRACTION, evals=a["evals"], **SIZE), "",
             "## Criteria (issue 14, 'What it must show' item 3)", "", *report["criteria"], "",
             "## Accuracy", "", *accuracy_tables(report["runs"], report["contenders"], report["targets"]),
             "## Throughput", "", "Medians of interleaved repeats, each in a fresh process.", "",
             *throughput_tables(report["throughput"]), NOTES_MARKER, notes]
    return "\n".join(lines).rstrip() + "\n"


PROTOCOL = """**Protocol.** Every contender has the same size — {layers} transforms, conditioner networks of {depth} hidden
layers of {hidden} ReLU units, {bins} spline bins (flowforge's NSF recipe for tables of over 2,000 rows; its
RealNVP recipe alone would take 10 couplings) — and trains on the same standardised batches of 256 (x and the
context standardised with the training rows' mean and std), with flowforge's trainer's own `train_step`, for the
same wall-clock budget: {budget:g} s of training for SLCP and MINIBOONE, {toy:g} s for the 2-D sets, on one torch
thread. Every contender is evaluated on the validation rows at {evals} evenly spaced points of its budget
(evaluation not counted in it) and its best validation weights are scored on the test rows; scores are in the
data's own units (log q(x) = log q_std(u) − Σ log σ_x for the standardisation of x), identically for every
contender. Peers train as their documentation does: Adam at a constant 1e-3, no clipping. flowforge trains as its
trainer does with the recipe `flowforge train --model nsf|maf|realnvp` resolves for the data (tables: fused AdamW,
weight decay 0.2, warm-up and cosine decay — here over the time budget instead of a step count — from lr 7e-4
(MAF: 2e-3 on tables of 5,000 rows or more, so on SLCP), gradient clipping at 10, Gaussian noise of std 0.03 on
the standardised x of every training batch of a table under 5,000 rows (MINIBOONE; none on SLCP), a 0.995 moving
average of the weights for evaluation; the 2-D sets' recipe is the same but for its warm-up); flowforge's MAF
bounds each layer's log-scale by 3 tanh(·/3) (its default), RealNVP by tanh (the book's); nothing is tuned per
target or seed. Spline intervals: flowforge [−4, 4] (its default), zuko [−5, 5] (fixed), nflows [−3, 3]
(the NSF paper's tabular setting; nflows' default is 1); identity/linear tails outside for all three. zuko's NSF
is autoregressive (its default); its coupling variant (`passes=2`) is measured for throughput. nflows' MADE is its
plain (non-residual) one with the same two hidden layers, with a reversal between layers; its coupling networks
are plain MLPs on [x_given, c].

* **SLCP** (Papamakarios et al. 2019, arXiv:1805.07226): θ ~ U(−3, 3)^5, x = four i.i.d. 2-D Gaussian draws with
  mean (θ1, θ2), standard deviations θ3², θ4² and correlation tanh(θ5); q(x | θ) is learned from 10,000 or
  100,000 simulated pairs (10% of them held out for validation) and scored by the gap E[log p(x | θ) − log q(x | θ)]
  (the expected KL, ≥ 0 in expectation) on 10,000 fresh pairs per seed (the same for both simulation counts),
  with log p in closed form, float64, on the simulator's own x. The standard definition is kept: θ3², θ4² near 0
  make some test densities extremely peaked (log p up to tens of nats), no floor is applied, and the mean
  gap includes them for every contender alike (its standard error is given in `docs/tabular.json`, beside the median).
* **MINIBOONE** (`shared/data/miniboone`): train on the 3,284-row *validation* split of the MAF preprocessing
  (10% of it held out for validation, shuffled by the seed), test on its 3,648-row test split. **This is not the
  papers' protocol** (they train on the 29,556-row train split, which is not available here), so the figures are
  not comparable to published MINIBOONE numbers (≈ 9.7–11.7 nats).
* **checkerboard, 8gaussians** (`flowforge.data.toy`, 3,000 training, 2,000 validation and 10,000 test points per
  seed): the gap to the true NLL. checkerboard is uniform, density 1/32, on the eight 2 × 2 squares of [−4, 4)²
  whose indices ⌊x/2⌋ sum to an even number (NLL log 32 = 3.466); 8gaussians is an equal mixture of isotropic
  Gaussians of std 0.5/√2 centred at 4(cos kπ/4, sin kπ/4)/√2 (`benchmarks/densities.py`).
* **Throughput**: train steps/s at batch 256, log_prob and samples (one per context row) per second in calls of
  8,192 (log_prob) and 8,192 or, for MINIBOONE, 1,024 (sample) under `no_grad`, each contender in its own process
  at the same size."""


def versions() -> dict:
    from importlib import metadata
    import platform

    return {**{name: metadata.version(name) for name in ("flowforge", "torch", "zuko", "nflows")},
            "python": platform.python_version(), "cpu_count": os.cpu_count()}


def main(argv: list[str] | None = None) -> None:
    from benchmarks.tabular_contenders import CONTENDERS, EXTRA

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of training per SLCP/MINIBOONE run (the 2-D sets get half)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated; empty: throughput only, keeping the accuracy runs in --out's tabular.json")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated names")
    parser.add_argument("--evals", type=int, default=5, help="validation points per run")
    parser.add_argument("--throughput-repeats", type=int, default=3)
    parser.add_argument("--throughput-steps", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="a smoke run: seed 0, 2 s budgets, 1 throughput repeat")
    parser.add_argument("--out", type=Path, default=DOCS, help="writes tabular.md and tabular.json here")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.seeds, args.evals, args.throughput_repeats, args.throughput_steps = 2.0, "0", 3, 1, 10
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.targets = [t for t in args.targets.split(",") if t]
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = [n for n in contenders + args.targets if n not in {**CONTENDERS, **EXTRA} and n not in TARGETS]
    if unknown:
        parser.error(f"unknown contender or target {unknown[0]!r}")
    started, load_start = time.perf_counter(), load_average()
    command = "python -m benchmarks.tabular" + "".join(f" {a!r}" if not a or " " in a else f" {a}"
                                                        for a in (argv if argv is not None else sys.argv[1:]))
    log = lambda row: print(_line(row), file=sys.stderr, flush=True)  # noqa: E731
    previous = args.out / "tabular.json"
    if not args.targets and previous.exists():  # a throughput-only run keeps the last accuracy runs
        kept = json.loads(previous.read_text())
        runs = kept["runs"]
        accuracy = kept.get("accuracy") or {k: kept[k] for k in ("command", "date", "budget_s", "evals", "minutes",
                                                                 "load_start", "load_end")}
        args.targets = list(dict.fromkeys(r["target"] for r in runs))
    else:
        runs = run_accuracy(args, contenders, log)
        accuracy = {"command": command, "date": time.strftime("%Y-%m-%d"), "budget_s": args.budget,
                    "evals": args.evals, "minutes": (time.perf_counter() - started) / 60,
                    "load_start": load_start, "load_end": load_average()}
    nsf_pair = [n for n in ("flowforge NSF", "zuko NSF", "zuko NSF-coupling", "flowforge NSF-AR")]
    throughput = run_throughput(args, list(dict.fromkeys(nsf_pair + contenders)), log) if args.throughput_repeats else []
    report = {"command": command, "date": time.strftime("%Y-%m-%d"), "versions": versions(),
              "minutes": (time.perf_counter() - started) / 60, "load_start": load_start, "load_end": load_average(),
              "accuracy": accuracy, "size": SIZE, "batch_size": BATCH,
              "contenders": contenders, "targets": args.targets, "runs": runs, "throughput": throughput}
    report["criteria"] = criteria(runs, throughput)
    args.out.mkdir(parents=True, exist_ok=True)
    md = args.out / "tabular.md"
    notes = md.read_text().split(NOTES_MARKER, 1)[1].strip() if md.exists() and NOTES_MARKER in md.read_text() else ""
    (args.out / "tabular.json").write_text(json.dumps(report, indent=1) + "\n")
    md.write_text(markdown(report, notes))
    print(md.read_text())


if __name__ == "__main__":
    main()
