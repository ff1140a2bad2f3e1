"""Figures written as PNG files into a run directory."""

from __future__ import annotations

from pathlib import Path

from flowforge.data import load_splits
from flowforge.plots.two_d import chapter_figure, density_figure, density_grid, training_curve
from flowforge.training.checkpoint import METRICS
from flowforge.training.run import load_run


def plot_run(run_dir: str | Path) -> list[Path]:
    """Every figure for a trained run, into ``RUN/plots/``; returns the files written."""
    run_dir = Path(run_dir)
    flow, config, _ = load_run(run_dir)
    data = load_splits(config.data, config.seed, config.n_train).train
    out = run_dir / "plots"
    written = [chapter_figure(flow, data, out / "flow.png")]
    if data.shape[1] == 2:
        written.append(density_figure(flow, data, out / "density.png"))
    written.append(training_curve(run_dir / METRICS, out / "training_curve.png"))
    return written


__all__ = ["plot_run", "chapter_figure", "density_figure", "density_grid", "training_curve"]
