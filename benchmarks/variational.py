"""Variational inference: flowforge against normflows on normflows' own example targets, in one run.

    python -m benchmarks.variational                 # 45 s of training per library and target
    python -m benchmarks.variational --budget 10     # a smoke run

Targets: ``TwoMoons``, ``RingMixture`` and ``CircularGaussianMixture`` from
``normflows.distributions.target``. Both libraries fit a RealNVP of the same size (``--layers``
affine couplings, MLPs of two hidden layers of ``--hidden``) to each target for the same
wall-clock budget. normflows trains as its examples do: ``model.reverse_kld`` on batches of 512,
Adam (lr 5e-4, weight decay 1e-5) at a constant learning rate, the last iterate evaluated, for
``--budget`` seconds. flowforge runs :func:`flowforge.variational.fit` at its defaults
(forward KL by importance weights for the first 10% of the run, then reverse- and forward-KL steps
alternately; AdamW at 3e-3 with warm-up and cosine decay; EMA; best-ELBO weights kept) on the same
512 draws per step, in float32 as normflows, on a base of 8 equal-weight Student-t components (5 dof)
with learned locations and scales (32 parameters; ``student_t_base(flow, components=8)``), with
``seconds=budget``: it stops after the same wall-clock, its own evaluations included, and its
schedule follows the clock. Both are scored alike on 20,000 fresh
draws: ELBO, Kish ESS per draw, Pareto k̂, and KL(q‖p) = log Z − ELBO (log Z is exact for
the circular mixture, 0, and the rings, closed form; by quadrature for the moons).

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

from flowforge.models import RealNVP
from flowforge.variational import fit, load_target
from flowforge.variational.diagnostics import EVAL_DRAWS, importance_summary
from flowforge.variational.fitting import MODEL_RECIPES, set_target_scale, student_t_base
from flowforge.variational.targets import ring_mixture, two_moons

DOCS = Path(__file__).resolve().parent.parent / "docs"
DRAWS = 512  # draws per step, both libraries (normflows' examples use 512)
MIXTURE_COMPONENTS = 8  # flowforge's base: moons, ring and circular mixture at seeds 0 and 1 against 4 and 16 (docs/variational.md)


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


def fit_normflows(target, layers: int, hidden: int, budget: float, seed: int):
    torch.manual_seed(seed)
    model = normflows_realnvp(layers, hidden)
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


def flowforge_flow(layers: int, hidden: int, seed: int):
    """flowforge's side of the comparison: the RealNVP, its target scale and its mixture base."""
    torch.manual_seed(seed)
    # float32, as normflows; the variational recipe's log-scale bound of 3 (normflows' scale is unbounded)
    flow = RealNVP(2, num_layers=layers, hidden=hidden, depth=2, standardize=True, mixed_precision=False,
                   scale_bound=MODEL_RECIPES["realnvp"]["scale_bound"])
    set_target_scale(flow, 1.5)  # every target here lies within radius ~3
    # heavy tails for importance sampling, and separate components for separate modes (no seams between them)
    return student_t_base(flow, components=MIXTURE_COMPONENTS)


def fit_flowforge(target, layers: int, hidden: int, budget: float, seed: int, objective: str | None):
    """fit() at its defaults (``objective`` None: the default objective) on the same draws per step,
    its schedule following the clock: it stops after ``budget`` seconds, its own evaluations included."""
    flow = flowforge_flow(layers, hidden, seed)
    options = {} if objective is None else {"objective": objective}
    result = fit(flow, target, steps=10_000_000, seconds=budget, draws=DRAWS, eval_every=400, seed=seed, **options)
    return flow, result["steps"], result["seconds"]  # the optimisation loop's wall-clock, as normflows' below


def score(draws_and_log_q, target, log_z: float) -> dict:
    x, log_q = draws_and_log_q
    with torch.no_grad():
        summary = importance_summary(target.log_prob(x) - log_q, log_z)
    return {k: summary[k] for k in ("elbo", "ess_per_draw", "pareto_k", "kl", "log_z", "log_z_stderr")}


def compare(budget: float, layers: int, hidden: int, seed: int, objectives: list[str]) -> list[dict]:
    """Per target: normflows, then flowforge with each of ``objectives``, each on the same budget."""
    rows = []
    for name, (target, log_z) in normflows_targets().items():
        model, steps, seconds = fit_normflows(target, layers, hidden, budget, seed)
        with torch.no_grad():
            theirs = {**score(model.sample(EVAL_DRAWS), target, log_z), "steps": steps, "seconds": seconds}
        for objective in objectives:
            flow, ff_steps, ff_seconds = fit_flowforge(target.log_prob, layers, hidden, budget, seed, objective)
            gen = torch.Generator().manual_seed(seed + 100)
            ours = score(flow.sample_and_log_prob(EVAL_DRAWS, generator=gen), target, log_z)
            params = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in flow.parameters()))
            rows.append({"target": name, "objective": objective or "forward-then-jeffreys (default)", "log_z": log_z, "normflows": theirs,
                         "flowforge": {**ours, "steps": ff_steps, "seconds": ff_seconds}, "params": params})
            print(row_line(rows[-1]), flush=True)
    return rows


def row_line(row: dict) -> str:
    nf_, ff = row["normflows"], row["flowforge"]
    return (f"| {row['target']} | {row['objective']} | {nf_['elbo']:.4f} / {ff['elbo']:.4f} | "
            f"{nf_['ess_per_draw']:.3f} / {ff['ess_per_draw']:.3f} ({ff['ess_per_draw'] / nf_['ess_per_draw']:.2f}×) | "
            f"{nf_['kl']:.4f} / {ff['kl']:.4f} | {nf_['pareto_k']:.2f} / {ff['pareto_k']:.2f} | "
            f"{nf_['steps']:,} in {nf_['seconds']:.0f} s / {ff['steps']:,} in {ff['seconds']:.0f} s | "
            f"{row['params'][0]:,} / {row['params'][1]:,} |")


HEADER = ("| target | flowforge objective | ELBO (normflows / flowforge) | ESS per draw (ratio) | KL(q‖p) | "
          "Pareto k̂ | steps in wall-clock | parameters |\n|---|---|---|---|---|---|---|---|")


def mode_coverage_table(steps: int, seed: int, figure: Path | None) -> list[dict]:
    """Reverse KL (STL), forward KL and the recipe on the 8-mode mixture: modes covered, ESS, KL."""
    from flowforge.models import NSF

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
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--coverage-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objectives", default="default",
                        help="flowforge objectives to run (comma-separated; 'default': fit()'s own)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--figure", type=Path, default=None, help="the mode-coverage figure (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"budget {args.budget:g} s per library and target, RealNVP {args.layers} couplings of 2×{args.hidden}, "
          f"torch {torch.__version__}, 1 thread\n\n{HEADER}")
    objectives = [None if o == "default" else o for o in args.objectives.split(",")]
    rows = compare(args.budget, args.layers, args.hidden, args.seed, objectives)
    print("\n| objective | modes covered | ESS per draw | KL(q‖p) | log Z | Pareto k̂ |\n|---|---|---|---|---|---|")
    coverage = mode_coverage_table(args.coverage_steps, args.seed, args.figure) if args.coverage_steps else []
    if args.out is not None:
        record = {"command": "python -m benchmarks.variational " + " ".join(sys.argv[1:]),
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed,
                  "realnvp_scale_bound": MODEL_RECIPES["realnvp"]["scale_bound"], "budget": args.budget,
                  "base": f"{MIXTURE_COMPONENTS} Student-t components (5 dof)",
                  "rows": rows, "coverage": coverage}
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
