"""Figures written as PNG files into a run directory."""

from __future__ import annotations

from pathlib import Path

from flowforge.data import load_splits
from flowforge.plots.ffjord import density_over_time, ffjord_figures, trajectories_figure, trajectory_animation
from flowforge.plots.images import image_figures, image_grid, write_image_grid
from flowforge.plots.two_d import chapter_figure, density_figure, density_grid, training_curve
from flowforge.training.checkpoint import METRICS
from flowforge.training.run import load_run


def plot_run(run_dir: str | Path) -> list[Path]:
    """Every figure for a trained run, into ``RUN/plots/``; returns the files written."""
    run_dir = Path(run_dir)
    flow, config, _ = load_run(run_dir)
    splits = load_splits(config.data, config.seed, config.n_train, data_dir=config.data_dir)
    out = run_dir / "plots"
    if len(splits.shape) == 3:  # images: samples by temperature, reconstructions, interpolations
        return image_figures(flow, splits.test, out) + [training_curve(run_dir / METRICS, out / "training_curve.png")]
    data = splits.train
    written = [chapter_figure(flow, data, out / "flow.png")]
    if data.shape[1] == 2:
        written.append(density_figure(flow, data, out / "density.png"))
    written.append(training_curve(run_dir / METRICS, out / "training_curve.png"))
    if config.model == "ffjord":
        written += ffjord_figures(flow, data, out)
    return written


__all__ = ["plot_run", "chapter_figure", "density_figure", "density_grid", "training_curve",
           "ffjord_figures", "density_over_time", "trajectories_figure", "trajectory_animation",
           "image_figures", "image_grid", "write_image_grid"]
