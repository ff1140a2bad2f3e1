"""What ``flowforge eval`` and ``flowforge sample --resample`` do with a variational run.

A run's built-in target is rebuilt from its name. A user's ``path.py:function`` target is not
imported when ``eval``, ``sample`` or ``plot`` load a run (loading never executes code, and a run
directory may come from elsewhere): ``eval`` then reports the diagnostics stored when the run was
fitted. ``fit --resume``, which must evaluate the target to go on, imports the file again, and so do
``eval`` and ``sample --resample`` when asked with ``--import-target``, if the file is still the one
the run was fitted to (its SHA-256).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from flowforge.errors import FlowforgeError, warn
from flowforge.training.checkpoint import LAST_CHECKPOINT, RESULTS, read_json
from flowforge.training.device import flow_device
from flowforge.training.rundir import warn_if_unfinished
from flowforge.variational.diagnostics import (EVAL_DRAWS, diagnose, importance_summary, log_weights, resample,
                                               warn_if_unreliable)
from flowforge.variational.fitting import changed_target, variational_section
from flowforge.variational.targets import Target, built_in_target, is_file_target, load_target

REPORTED = ("elbo", "log_z", "log_z_stderr", "ess_per_draw", "pareto_k", "kl", "true_log_z", "modes_covered")


def run_target(raw: dict, import_file: bool = False) -> Target | None:
    """The target a run was fitted to: a built-in rebuilt by name; a user's file only with
    ``import_file`` (the user's explicit word) and only the very file of the fit; else None."""
    section = variational_section(raw)
    if section is None or (is_file_target(section["target"]) and not import_file):
        return None
    if not is_file_target(section["target"]):
        return built_in_target(section["target"], int(raw["dim"]))
    if not section.get("target_sha256"):  # every fit records it: a run without one was edited or made elsewhere
        raise FlowforgeError(f"{section['target']}: the run records no SHA-256 of its target file, so --import-target "
                             "cannot check it is the file the run was fitted to")
    changed = changed_target(raw)
    if changed is not None:
        raise FlowforgeError(f"{changed}: changed (or gone) since the fit; --import-target imports only the file "
                             "the run was fitted to")
    return load_target(section["target"], int(raw["dim"]))


def evaluate_run(run_dir: Path, flow, raw: dict, seed: int = 0, draws: int = EVAL_DRAWS,
                 import_target: bool = False) -> dict[str, Any]:
    """Fresh diagnostics of the run's flow against its target on ``draws`` draws from ``seed``, or
    (a user's file target, unless ``import_target``) the stored ones of results.json, marked
    ``"stored": true``."""
    target = run_target(raw, import_target)
    name = variational_section(raw)["target"]
    if target is None:
        if not (Path(run_dir) / RESULTS).is_file() and (Path(run_dir) / LAST_CHECKPOINT).is_file():
            raise FlowforgeError(f"{run_dir}: its fit stopped before the end (no {RESULTS}); "
                                 f"flowforge fit --resume {run_dir} finishes it")
        stored = read_json(Path(run_dir) / RESULTS)
        warn_if_unreliable(stored)
        changed = changed_target(raw)
        if changed is not None:
            warn(f"{changed}: changed (or gone) since the fit; these diagnostics are of the file as it was")
        return {**{k: stored[k] for k in (*REPORTED, "draws") if k in stored}, "target": name, "stored": True,
                "target_changed": changed is not None}
    warn_if_unfinished(Path(run_dir), "fit", "fit")  # fresh figures of a fit stopped part-way, said as such
    generator = torch.Generator(flow_device(flow)[0]).manual_seed(seed)
    summary = diagnose(flow, target, draws, generator=generator)
    warn_if_unreliable(summary)
    return {**{k: summary[k] for k in REPORTED if k in summary}, "draws": draws, "target": name}


def eval_line(summary: dict[str, Any]) -> str:
    """The one line ``flowforge eval`` prints for a variational run."""
    line = (f"{summary['target']}: ELBO {summary['elbo']:.4f} · log Z {summary['log_z']:.4f} ± "
            f"{summary['log_z_stderr']:.4f}" + (f" (true {summary['true_log_z']:.4f}, KL(q‖p) {summary['kl']:.4f})"
                                              if "kl" in summary else "")
            + f" · ESS/n {summary['ess_per_draw']:.3f} · Pareto k̂ {summary['pareto_k']:.2f}")
    if "modes_covered" in summary:
        line += f" · modes covered {summary['modes_covered']:.0%}"
    if not summary.get("stored"):
        return line + f" · {summary['draws']} draws"
    return line + (" (stored at fit time: the target file has changed since, so it cannot be evaluated afresh)"
                   if summary.get("target_changed") else " (stored at fit time: the target is a user's file, not "
                   "imported on load; --import-target evaluates it afresh)")


def resampled_batches(flow, raw: dict, num: int, seed: int, pool: int = 8, import_target: bool = False):
    """``num`` importance-resampled draws (SIR from a pool of ``pool``·num draws of q, in batches of
    at most 65,536; at least :data:`EVAL_DRAWS`, so a few draws still come from a pool whose Pareto
    k̂ means something), approximately from the target p rather than q."""
    target = run_target(raw, import_target)
    if target is None:
        changed = changed_target(raw)
        raise FlowforgeError(f"--resample needs the run's target, and {changed} has changed (or gone) since the fit"
                             if changed is not None else "--resample needs the run's target; a user's path.py:function "
                             "target is not imported on load: add --import-target to import it (it runs the file's code)")
    generator = torch.Generator(flow_device(flow)[0]).manual_seed(seed)  # a flow may hold buffers only
    batch = 65_536
    for start in range(0, num, batch):
        count = min(batch, num - start)
        x, log_w = log_weights(flow, target, max(pool * count, EVAL_DRAWS), generator=generator)
        if not bool(torch.isfinite(log_w).any()):
            raise FlowforgeError("every importance weight is zero; the flow puts no mass where the target has any")
        if start == 0:
            warn_if_unreliable(importance_summary(log_w.double(), getattr(target, "log_z", None)))
        yield resample(x, log_w, count, generator)


def finite_or_none(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with non-finite numbers as None (JSON has no NaN or infinity)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}


def plot_and_list(run_dir: Path) -> None:
    """``flowforge plot`` on a variational run: draw its figures and name each file written."""
    import click

    from flowforge.variational.figures import plot_variational_run

    for path in plot_variational_run(run_dir):
        click.echo(f"wrote {path}")
