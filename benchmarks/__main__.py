"""flowforge against nflows, zuko and normflows, side by side in one run.

    python -m benchmarks                 # everything; writes docs/benchmarks.md and docs/benchmarks.json
    python -m benchmarks --quick         # a smoke run: fewer repeats, shorter budgets

Each measurement runs in a fresh process (its own peak memory), libraries interleaved and
repeated; the table shows medians and each figure's ratio to the best peer's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from benchmarks import jacobian

PEERS = ("zuko", "nflows", "normflows")
LIBRARIES = ("flowforge", *PEERS)
BOOK = {"layers": 6, "hidden": 256, "depth": 4}
TRUE_MOONS_NLL = 1.137  # the true density of standardised moons (noise 0.05)
DOCS = Path(__file__).resolve().parent.parent / "docs"


def method() -> str:
    """How every contender trains, with flowforge's figures read from its defaults."""
    from benchmarks.data import moons_defaults

    d = moons_defaults()
    arch = d.model_options
    lr = f"{d.lr:.0e}".replace("e-0", "e-")  # 7e-4, as the docs write it
    return f"""Every library builds the same architecture and trains on the same standardised data and
batches. Peers train as their documentation does: `torch.optim.Adam`, no clipping, the last
iterate evaluated. flowforge trains as its trainer does by default: fused AdamW (weight decay
{d.weight_decay:g}), gradient clipping at {d.grad_clip:g}, a {d.ema_decay:g} moving average of the weights for
evaluation, Gaussian noise of std {d.train_noise:g} added to the (standardised) training batches, and bf16
coupling networks where the CPU multiplies bf16 natively (this machine: AVX512-BF16; the couplings
stay exactly invertible, log|det J| and the affine update are float32). For time to target it also
uses its default model, {arch['num_layers']} couplings of {arch['depth']}×{arch['hidden']} (the book's is {BOOK['layers']} of \
{BOOK['depth']}×{BOOK['hidden']}), and its schedule, warm-up then cosine decay from {lr} over {d.steps:,} steps.
Throughput is steps of batch 256, and log_prob / sample calls of 8,192 points under `no_grad`.
Time to target counts training time only (evaluation on the 10,000 test points every 50 steps is
excluded)."""


def worker(spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"benchmark worker failed for {spec['library']}: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout)


def interleaved(specs: list[dict], repeats: int) -> dict[str, list[dict]]:
    """Run every spec ``repeats`` times, rotating the order each round to spread drift."""
    out: dict[str, list[dict]] = {s["library"]: [] for s in specs}
    for r in range(repeats):
        for spec in specs[r % len(specs):] + specs[:r % len(specs)]:
            out[spec["library"]].append(worker(spec))
            print(f"  {spec['task']:<10} {spec['data']:<7} {spec['library']:<10} round {r + 1}", file=sys.stderr)
    return out


def throughput_table(data: str, repeats: int, steps: int) -> dict:
    specs = [{"library": lib, "task": "throughput", "data": data, "architecture": BOOK, "batch_size": 256,
              "steps": steps} for lib in LIBRARIES]
    runs = interleaved(specs, repeats)
    keys = ("train_steps_per_s", "log_prob_per_s", "samples_per_s", "peak_rss_mb")
    return {lib: {k: statistics.median(r[k] for r in rs) for k in keys} for lib, rs in runs.items()}


def target_runs(budget: float, target: float) -> dict:
    """Time to the target test NLL on moons: peers as the CEO measured them (book model, Adam 1e-3),
    flowforge with its own defaults (model, schedule, batch)."""
    from benchmarks.data import moons_defaults

    defaults = moons_defaults()
    common = {"task": "target", "data": "moons", "target": target, "budget_s": budget, "eval_every": 50}
    specs = [{**common, "library": lib, "architecture": BOOK, "batch_size": 256, "lr": 1e-3} for lib in PEERS]
    options = dict(defaults.model_options)  # the builder's names → the contenders' (layers, hidden, depth)
    architecture = {"layers": options.pop("num_layers"), "hidden": options.pop("hidden"),
                    "depth": options.pop("depth"), **options}
    specs.append({**common, "library": "flowforge", "batch_size": defaults.batch_size, "architecture": architecture,
                  "schedule": {k: getattr(defaults, k) for k in ("lr", "steps", "warmup_steps", "min_lr_ratio")}})
    return {s["library"]: {**worker(s), "architecture": s["architecture"]} for s in specs}


def versions() -> dict:
    libs = {name: metadata.version(name) for name in ("flowforge", "torch", "zuko", "nflows", "normflows")}
    return {**libs, "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
            "cpu_count": __import__("os").cpu_count()}


def ratio(value: float, peers: list[float], higher_is_better: bool = True) -> str:
    best = max(peers) if higher_is_better else min(peers)
    return f"{value / best:.2f}×" if best else "n/a"


def markdown(report: dict) -> str:
    lines = ["# Benchmarks", "",
             f"Generated by `python -m benchmarks` on {report['date']} — {report['versions']['machine']}, "
             f"{report['versions']['cpu_count']} cores; " +
             ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k not in ("machine", "cpu_count")) + ".",
             "", "Medians over interleaved repeats, each in a fresh process. Ratio: flowforge ÷ best peer.", "",
             method(), ""]
    for data, table in report["throughput"].items():
        lines += [f"## Book RealNVP ({BOOK['layers']} couplings, {BOOK['depth']}×{BOOK['hidden']} MLP, batch 256) on {data}",
                  "", "| library | train steps/s | log_prob points/s | samples/s | peak RSS (MB) |", "|---|---|---|---|---|"]
        for lib, row in table.items():
            lines.append(f"| {lib} | {row['train_steps_per_s']:.1f} | {row['log_prob_per_s']:,.0f} | "
                         f"{row['samples_per_s']:,.0f} | {row['peak_rss_mb']:.0f} |")
        ff = table["flowforge"]
        lines.append("| **flowforge ÷ best peer** | " + " | ".join(
            ratio(ff[k], [table[p][k] for p in PEERS], k != "peak_rss_mb")
            for k in ("train_steps_per_s", "log_prob_per_s", "samples_per_s", "peak_rss_mb")) + " |")
        lines.append("")
    t = report["target"]
    lines += [f"## Time to test NLL ≤ {report['target_nll']} nats on moons (budget {report['budget_s']:.0f} s)", "",
              "| library | setup | seconds to target | steps | best test NLL |", "|---|---|---|---|---|"]
    for lib, row in t.items():
        arch = row.get("architecture", BOOK)
        setup = (f"flowforge defaults ({arch['layers']} couplings, {arch['depth']}×{arch['hidden']})"
                 if lib == "flowforge" else "book model, Adam 1e-3")
        reached = f"{row['seconds_to_target']:.1f}" if row["seconds_to_target"] is not None else "not reached"
        lines.append(f"| {lib} | {setup} | {reached} | {row['steps']} | {row['best_nll']:.4f} |")
    lines += ["", f"The true density scores {TRUE_MOONS_NLL} nats.", "",
              "## Cost of log|det J|", "", "![jacobian cost](images/jacobian_cost.png)", "",
              "| D | brute force (ms) | coupling (ms) | ratio |", "|---|---|---|---|"]
    for r in report["jacobian"]:
        lines.append(f"| {r['dim']} | {r['brute_force_s'] * 1e3:.3f} | {r['coupling_s'] * 1e3:.3f} | "
                     f"{r['brute_force_s'] / r['coupling_s']:.0f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 repeat, short budgets")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per time-to-target run")
    parser.add_argument("--target", type=float, default=1.20, help="test NLL target on moons")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    repeats, steps, budget = (1, 20, 10.0) if args.quick else (args.repeats, 200, args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "images").mkdir(exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "versions": versions(), "target_nll": args.target,
              "budget_s": budget, "throughput": {}}
    for data in ("moons", "gmm16"):
        report["throughput"][data] = throughput_table(data, repeats, steps)
    report["target"] = target_runs(budget, args.target)
    report["jacobian"] = jacobian.measure()
    jacobian.plot(report["jacobian"], args.out / "images" / "jacobian_cost.png")
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
