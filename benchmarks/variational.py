"""Variational inference: flowforge against normflows on normflows' own example targets, in one run.

    python -m benchmarks.variational                 # 45 s of training per library and target
    python -m benchmarks.variational --budget 10     # a smoke run

Targets: ``TwoMoons``, ``RingMixture`` and ``CircularGaussianMixture`` from
``normflows.distributions.target``. Each flow is fitted to each target for the same wall-clock budget,
on 512 draws per step, in float32, on one thread; flowforge's is no larger than either of normflows'.

normflows, two peers, each trained as its examples train: ``model.reverse_kld`` on batches of 512,
Adam (lr 5e-4, weight decay 1e-5) at a constant learning rate, the last iterate evaluated, on a
Gaussian base. ``RealNVP``: its examples' RealNVP (``--layers`` affine coupling blocks with MLPs of
two hidden layers of ``--hidden``, swaps between them). ``NSF``: its rational-quadratic spline
couplings (``CoupledRationalQuadraticSpline``, 4 of them, alternating masks, a residual net of one
block of 60, 8 bins, tail bound 4), of about the RealNVP's size.

flowforge: an NSF of 4 spline couplings (MLPs of 2 × 64, 22 bins on ±5: 34,052 parameters against the
RealNVP's 35,348) on its Gaussian base, fitted by :func:`flowforge.variational.fit` with
``objective="forward-kl"`` (``--objectives``; self-normalised importance weights on every step) and
its other defaults (AdamW at 3e-3 with warm-up and cosine decay; EMA; best-ELBO weights kept; the
target placed, here left at the unit scale since all three lie within ±4), with ``seconds=budget``:
it stops after the same wall-clock, its own evaluations included, and its schedule follows the
clock. All are scored alike on 20,000 fresh draws: ELBO, Kish ESS per draw, Pareto k̂, and
KL(q‖p) = log Z − ELBO (log Z is exact for the circular mixture, 0, and the rings, closed form; by
quadrature for the moons).

A second table reports the fraction of the 8 modes of flowforge's Gaussian mixture covered by
reverse KL (STL) against forward KL by importance weights, with a figure of their draws.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.options import names_option
from flowforge.models import NSF
from flowforge.variational import fit, load_target
from flowforge.variational.diagnostics import EVAL_DRAWS, importance_summary
from flowforge.variational.fitting import set_target_scale
from flowforge.variational.objectives import OBJECTIVES
from flowforge.variational.targets import ring_mixture, two_moons

DOCS = Path(__file__).resolve().parent.parent / "docs"
DRAWS = 512  # draws per step, every library (normflows' examples use 512)
# flowforge's flow, no larger than normflows' RealNVP (34,052 parameters against 35,348): of 8, 16 and 22 bins,
# 5 couplings of 12 bins and 3 of 32, 22 bins fitted two moons best. The splines span ±5, not ±4: outside
# them q keeps the Gaussian base's tails (1.3e-4 of its mass outside the square ±4, 1.1e-6 outside ±5),
# where two moons' and the rings' log-density is −50 or lower: two moons KL 0.027 → 0.012 (docs/variational.md)
FLOWFORGE_NSF = {"num_layers": 4, "hidden": 64, "depth": 2, "bins": 22, "bound": 5.0}
NORMFLOWS_NSF = {"couplings": 4, "hidden": 60, "bins": 8, "tail_bound": 4.0}  # 35,468 parameters


def normflows_targets() -> dict:
    """normflows' example targets and their log Z (checked against flowforge's own copies)."""
    from normflows.distributions.target import CircularGaussianMixture, RingMixture, TwoMoons

    targets = {"two moons": (TwoMoons(), two_moons()), "ring mixture": (RingMixture(), ring_mixture(2)),
               "circular mixture": (CircularGaussianMixture(), None)}
    x = 3 * torch.randn(1000, 2)
    for name, (theirs, ours) in targets.items():
        if ours is not None:  # the same density: our log Z is theirs
            assert torch.allclose(theirs.log_prob(x), ours(x), atol=1e-4), name
    return {name: (theirs, 0.0 if ours is None else ours.log_z) for name, (theirs, ours) in targets.items()}


def normflows_realnvp(layers: int, hidden: int):
    """normflows' RealNVP as its README builds it: affine coupling blocks and swaps on a Gaussian."""
    import normflows as nf

    flows = []
    for _ in range(layers):
        flows += [nf.flows.AffineCouplingBlock(nf.nets.MLP([1, hidden, hidden, 2], init_zeros=True)),
                  nf.flows.Permute(2, mode="swap")]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2), flows)


def normflows_nsf():
    """normflows' rational-quadratic spline couplings, masks alternating, on a Gaussian."""
    import normflows as nf

    o = NORMFLOWS_NSF
    flows = [nf.flows.CoupledRationalQuadraticSpline(2, 1, o["hidden"], num_bins=o["bins"], tail_bound=o["tail_bound"],
                                                     reverse_mask=i % 2 == 1) for i in range(o["couplings"])]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2), flows)


def normflows_peers(layers: int, hidden: int) -> dict:
    """The normflows flows flowforge is measured against, by name: builders of a fresh flow."""
    return {"RealNVP": lambda: normflows_realnvp(layers, hidden), "NSF": normflows_nsf}


def fit_normflows(build, target, budget: float, seed: int):
    torch.manual_seed(seed)
    model = build()
    model.p = target
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < budget:
        optimizer.zero_grad()
        loss = model.reverse_kld(DRAWS)
        if torch.isfinite(loss):
            loss.backward()
            optimizer.step()
        steps += 1
    return model, steps, time.perf_counter() - started


def flowforge_flow(seed: int):
    """flowforge's side of the comparison: an NSF on its Gaussian base, its first layer placed by fit()."""
    torch.manual_seed(seed)
    return NSF(2, standardize=True, **FLOWFORGE_NSF)


def fit_flowforge(target, budget: float, seed: int, objective: str | None):
    """fit() on the same draws per step, its schedule following the clock (``objective`` None: fit()'s
    default): it stops after ``budget`` seconds, its own evaluations included."""
    flow = flowforge_flow(seed)
    options = {} if objective is None else {"objective": objective}
    result = fit(flow, target, steps=10_000_000, seconds=budget, draws=DRAWS, eval_every=400, seed=seed, **options)
    return flow, result["steps"], result["seconds"]  # the optimisation loop's wall-clock, as fit_normflows's


def score(draws_and_log_q, target, log_z: float) -> dict:
    x, log_q = draws_and_log_q
    with torch.no_grad():
        log_w = target.log_prob(x) - log_q
        summary = importance_summary(log_w, log_z)
    elbo_stderr = float(log_w.double().std() / len(log_w) ** 0.5)  # the ELBO is a mean of log w over the draws
    return {**{k: summary[k] for k in ("elbo", "ess_per_draw", "pareto_k", "kl", "log_z", "log_z_stderr")},
            "elbo_stderr": elbo_stderr}


def compare(budget: float, layers: int, hidden: int, seed: int, objectives: list[str], peers: list[str]) -> list[dict]:
    """Per target: each normflows peer, then flowforge with each of ``objectives``, each on the same budget."""
    rows, builders = [], normflows_peers(layers, hidden)
    for name, (target, log_z) in normflows_targets().items():
        theirs = {}
        for peer in peers:
            model, steps, seconds = fit_normflows(builders[peer], target, budget, seed)
            with torch.no_grad():
                theirs[peer] = {**score(model.sample(EVAL_DRAWS), target, log_z), "steps": steps, "seconds": seconds,
                                "params": sum(p.numel() for p in model.parameters())}
        for objective in objectives:
            flow, ff_steps, ff_seconds = fit_flowforge(target.log_prob, budget, seed, objective)
            gen = torch.Generator().manual_seed(seed + 100)
            ours = {**score(flow.sample_and_log_prob(EVAL_DRAWS, generator=gen), target, log_z), "steps": ff_steps,
                    "seconds": ff_seconds, "params": sum(p.numel() for p in flow.parameters())}
            for peer in peers:
                rows.append({"target": name, "objective": objective or "forward-then-jeffreys (default)", "peer": peer,
                             "log_z": log_z, "normflows": theirs[peer], "flowforge": ours})
                print(row_line(rows[-1]), flush=True)
    return rows


def row_line(row: dict) -> str:
    nf_, ff = row["normflows"], row["flowforge"]
    return (f"| {row['target']} | {row['peer']} | {row['objective']} | {nf_['elbo']:.4f} / {ff['elbo']:.4f} "
            f"(± {nf_['elbo_stderr']:.4f} / {ff['elbo_stderr']:.4f}) | "
            f"{nf_['ess_per_draw']:.3f} / {ff['ess_per_draw']:.3f} ({ff['ess_per_draw'] / nf_['ess_per_draw']:.2f}×) | "
            f"{nf_['kl']:.4f} / {ff['kl']:.4f} | {nf_['pareto_k']:.2f} / {ff['pareto_k']:.2f} | "
            f"{nf_['steps']:,} in {nf_['seconds']:.0f} s / {ff['steps']:,} in {ff['seconds']:.0f} s | "
            f"{nf_['params']:,} / {ff['params']:,} |")


HEADER = ("| target | normflows flow | flowforge objective | ELBO (normflows / flowforge, ± its standard error) | ESS per draw (ratio) | "
          "KL(q‖p) | Pareto k̂ | steps in wall-clock | parameters |\n|---|---|---|---|---|---|---|---|---|")


def mode_coverage_table(steps: int, seed: int, figure: Path | None) -> list[dict]:
    """Reverse KL (STL), forward KL and the recipe on the 8-mode mixture: modes covered, ESS, KL."""
    target, rows, draws = load_target("gmm"), [], {}
    for objective in ("stl", "reverse-kl", "forward-kl", "forward-then-stl", "forward-then-jeffreys"):
        torch.manual_seed(seed)
        flow = NSF(2, num_layers=4, hidden=64, bound=4.0, standardize=True)
        set_target_scale(flow, target.scale)
        result = fit(flow, target, steps=steps, objective=objective, lr=1e-3, eval_every=max(10, steps // 10), seed=seed)
        draws[objective] = flow.sample(3000, generator=torch.Generator().manual_seed(seed)).numpy()
        rows.append({"objective": objective, **{k: result[k] for k in ("modes_covered", "ess_per_draw", "kl",
                                                                        "log_z", "log_z_stderr", "pareto_k")}})
        r = rows[-1]
        print(f"| {objective} | {r['modes_covered']:.0%} | {r['ess_per_draw']:.3f} | {r['kl']:.3f} | "
              f"{r['log_z']:.3f} ± {r['log_z_stderr']:.3f} (true {target.log_z:.3f}) | {r['pareto_k']:.2f} |", flush=True)
    if figure is not None:
        _coverage_figure(draws, target, figure)
    return rows


def _coverage_figure(draws: dict, target, path: Path) -> None:
    from flowforge.plots.common import new_figure, save_figure

    fig, axes = new_figure(1, len(draws), figsize=(4 * len(draws), 4))
    modes = target.modes.numpy()
    for ax, (objective, x) in zip(axes, draws.items()):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, linewidths=0, color="C0")
        ax.scatter(modes[:, 0], modes[:, 1], marker="x", color="C3", s=40)
        ax.set_xlim(-7, 7)
        ax.set_ylim(-7, 7)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(objective)
    fig.suptitle("draws of q fitted to the 8-mode mixture (× = the modes)")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=45.0, help="seconds of training per library and target")
    parser.add_argument("--layers", type=int, default=8, help="normflows' RealNVP: coupling blocks")
    parser.add_argument("--hidden", type=int, default=64, help="normflows' RealNVP: hidden units per layer")
    parser.add_argument("--peers", default="RealNVP,NSF", help="normflows flows to fit (comma-separated)")
    parser.add_argument("--coverage-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objectives", default="forward-kl",
                        help="flowforge objectives to run (comma-separated; 'default': fit()'s own)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--figure", type=Path, default=None, help="the mode-coverage figure (PNG)")
    args = parser.parse_args()
    peers = names_option(parser, "--peers", args.peers, list(normflows_peers(args.layers, args.hidden)))
    objectives = names_option(parser, "--objectives", args.objectives, ["default", *OBJECTIVES])
    torch.set_num_threads(1)
    print(f"budget {args.budget:g} s per library and target; normflows RealNVP {args.layers} couplings of "
          f"2×{args.hidden}, normflows NSF {NORMFLOWS_NSF}; flowforge NSF {FLOWFORGE_NSF}; torch {torch.__version__}, "
          f"1 thread\n\n{HEADER}")
    objectives = [None if o == "default" else o for o in objectives]
    rows = compare(args.budget, args.layers, args.hidden, args.seed, objectives, peers)
    print("\n| objective | modes covered | ESS per draw | KL(q‖p) | log Z | Pareto k̂ |\n|---|---|---|---|---|---|")
    coverage = mode_coverage_table(args.coverage_steps, args.seed, args.figure) if args.coverage_steps else []
    if args.out is not None:
        record = {"command": "python -m benchmarks.variational " + " ".join(sys.argv[1:]),
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed,
                  "budget": args.budget, "flowforge_nsf": FLOWFORGE_NSF, "normflows_nsf": NORMFLOWS_NSF,
                  "normflows_realnvp": {"layers": args.layers, "hidden": args.hidden},
                  "rows": rows, "coverage": coverage}
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
