"""Figures of a variational run: target vs flow density and draws (2-D targets), and the ELBO and
ESS-per-draw curves. Built without pyplot (see :mod:`flowforge.plots.common`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from flowforge.errors import FlowforgeError, warn
from flowforge.plots.common import new_figure, save_figure
from flowforge.training.checkpoint import METRICS, read_metrics
from flowforge.variational.targets import checked_log_prob

GRID = 200


def _grid(box: float | tuple[float, float], centre: tuple[float, float], resolution: int = GRID
          ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    half = (box, box) if np.isscalar(box) else box
    xs, ys = (np.linspace(c - h, c + h, resolution) for c, h in zip(centre, half))
    xx, yy = np.meshgrid(xs, ys)
    return xs, ys, torch.tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=torch.float32)


def figure_window(flow, target) -> tuple[float | tuple[float, float], tuple[float, float]]:
    """(half-width, centre) of the window a 2-D fit is drawn in: a built-in target's own square about
    the origin, else where the flow's fixed first layer placed it (±4 of its scale about its mean,
    coordinate by coordinate)."""
    from flowforge.transforms import Standardize
    from flowforge.variational.placement import REACH

    if target is not None and target.scale is not None:  # built-in: it knows where its mass lies
        return target.box, (0.0, 0.0)
    layer = next((m for m in flow.modules() if isinstance(m, Standardize)), None)
    if layer is None:
        return REACH, (0.0, 0.0)
    return (REACH * float(layer.std[0]), REACH * float(layer.std[1])), (float(layer.mean[0]), float(layer.mean[1]))


def density_panels(flow, target, box: float | tuple[float, float] = 4.0, n: int = 3000, seed: int = 0,
                   centre: tuple[float, float] = (0.0, 0.0)) -> Figure:
    """Target density p (when the target is known), flow density q, and draws of q over p's contours,
    in the window of half-width ``box`` (one, or one per coordinate) about ``centre``.

    >>> from flowforge.variational.figures import density_panels
    >>> from flowforge.models import RealNVP
    >>> from flowforge.variational.targets import banana
    >>> len(density_panels(RealNVP(2, num_layers=2, hidden=8, depth=1), banana(), n=100).axes)
    3
    """
    xs, ys, points = _grid(box, centre)
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    with torch.no_grad():
        log_q = flow.log_prob(points.to(next(flow.parameters()))).cpu().reshape(GRID, GRID)
        draws = flow.sample(n, generator=torch.Generator(next(flow.parameters()).device).manual_seed(seed)).cpu()
    log_p = _target_on(target, points)
    target = target if log_p is not None else None
    panels = 3 if target is not None else 2
    fig, axes = new_figure(1, panels, figsize=(4.2 * panels, 4.6))  # room for the titles above square panels
    column = 0
    if target is not None:
        log_p = log_p.reshape(GRID, GRID)
        p = torch.exp(log_p - log_p.max()).numpy()
        axes[0].imshow(p, origin="lower", extent=extent, cmap="viridis")
        axes[0].set_title(f"target p̃ ({target.name})")
        column = 1
    axes[column].imshow(torch.exp(log_q - log_q.max()).numpy(), origin="lower", extent=extent, cmap="viridis")
    axes[column].set_title("flow q")
    last = axes[column + 1]
    if target is not None:
        last.contour(xs, ys, p, levels=6, colors="0.6", linewidths=0.6)
    last.scatter(draws[:, 0], draws[:, 1], s=2, alpha=0.5, linewidths=0, color="C1")
    last.set_xlim(xs[0], xs[-1])
    last.set_ylim(ys[0], ys[-1])
    last.set_title("draws of q" + (" over p's contours" if target is not None else ""))
    widths = (xs[-1] - xs[0], ys[-1] - ys[0])
    for ax in axes:  # equal units, unless one coordinate spreads far wider (it would draw the other as a line)
        ax.set_aspect("equal" if max(widths) <= 3 * min(widths) else "auto", adjustable="box")
    return fig


def _target_on(target, points: torch.Tensor) -> torch.Tensor | None:
    """The target's log-density on the figure's grid; None (said in a warning) when there is no
    target, or a user's cannot be evaluated there: the figure then leaves it out."""
    if target is None:
        return None
    try:
        with torch.no_grad():
            return checked_log_prob(target, points).float()
    except FlowforgeError as err:
        warn(f"{err}: the figure leaves the target out")
        return None


def curves(records: list[dict], log_z: float | None = None) -> Figure:
    """ELBO (with the true log Z where known) and Kish ESS per draw against the step.

    >>> from flowforge.variational.figures import curves
    >>> len(curves([{"step": 1, "elbo": 0.1, "ess_per_draw": 0.5}], log_z=0.3).axes)
    2
    """
    steps = [r["step"] for r in records]
    fig, (left, right) = new_figure(1, 2, figsize=(10, 4))
    dots = {"marker": "o", "ms": 3} if len(records) <= 30 else {}  # few evaluations: show where they are
    left.plot(steps, [r["elbo"] for r in records], label="ELBO", color="C0", **dots)
    if records and "log_z" in records[0]:
        left.plot(steps, [r["log_z"] for r in records], label="log Ẑ (importance sampling)", color="C2", ls="--",
                  **dots)
    if log_z is not None:
        left.axhline(log_z, color="0.3", lw=0.8, ls=":", label="true log Z")
    left.set_xlabel("step")
    left.set_ylabel("nats")
    left.legend()
    left.set_title("ELBO ≤ log Z")
    right.plot(steps, [r["ess_per_draw"] for r in records], color="C3", **dots)
    right.set_ylim(0, 1.02)
    right.set_xlabel("step")
    right.set_title("Kish ESS per draw")
    for ax in (left, right):
        ax.grid(alpha=0.2)
    return fig


def plot_variational_run(run_dir: str | Path, target=None) -> list[Path]:
    """A variational run's figures into ``RUN/plots/`` (under its lock, listed in its manifest). The
    target panel needs the ``target`` (a user's file, imported by the fit that just ran); a built-in
    one is rebuilt from the run's config."""
    from flowforge.training.run import load_run
    from flowforge.training.rundir import figures_folder, record_files, run_lock
    from flowforge.variational.report import run_target

    run_dir = Path(run_dir)
    with run_lock(run_dir):
        flow, _, raw = load_run(run_dir)
        target = target if target is not None else run_target(raw)
        out = figures_folder(run_dir)
        written = [save_figure(curves(read_metrics(run_dir / METRICS), raw["variational"].get("log_z")),
                               out / "fit_curves.png")]
        if int(raw["dim"]) == 2:
            box, centre = figure_window(flow, target)
            written.append(save_figure(density_panels(flow, target, box, centre=centre), out / "fit_density.png"))
        record_files(run_dir, written)
    return written
