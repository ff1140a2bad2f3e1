"""Figures of flows and runs: functions that return ``matplotlib`` figures (for notebooks), and
:func:`plot_run`, which writes a run's figures as PNG files into ``RUN/plots/``.

Importing this package never selects a matplotlib backend: figures are built without pyplot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowforge.data import load_splits
from flowforge.models.specs import spec_of
from flowforge.plots.common import new_figure, save_figure
from flowforge.plots.conditional import (class_density_figure, class_samples_figure, conditional_figures,
                                         conditional_samples_figure)
from flowforge.plots.ffjord import (density_over_time, ffjord_figures, sample_paths, save_animation,
                                    trajectories_figure, trajectory_animation)
from flowforge.plots.images import (image_figures, image_grid, interpolation_figure, reconstruction_figure,
                                    sample_grids_figure, write_image_grid)
from flowforge.plots.jacobian import dependency_figure, unit_square_images_figure
from flowforge.plots.two_d import (chapter_figure, density_1d_figure, density_figure, density_grid,
                                   latent_and_generated, read_metrics, training_animation, training_curve)
from flowforge.training.checkpoint import METRICS
from flowforge.training.run import load_run
from flowforge.training.rundir import figures_folder


def plot_run(run_dir: str | Path, with_data: bool = True) -> list[Path]:
    """Every figure for a trained run, into ``RUN/plots/``; returns the files written. Without
    ``with_data`` (its data gone) only the training curve, which needs none."""
    run_dir = Path(run_dir)
    flow, config, _ = load_run(run_dir)
    out = figures_folder(run_dir)
    curve = training_curve(run_dir / METRICS, config)
    if not with_data:
        return [save_figure(curve, out / "training_curve.png")]
    spec = spec_of(config.model)
    splits = load_splits(config.data, config.seed, config.n_train, data_dir=config.data_dir,
                         context=config.conditions_on, dtype=np.dtype(config.dtype))
    if splits.context_info is not None:  # p(x | c): figures per condition
        return conditional_figures(flow, splits, out) + [save_figure(curve, out / "training_curve.png")]
    if spec.images:  # samples by temperature, reconstructions, interpolations
        return image_figures(flow, splits.test, out) + [save_figure(curve, out / "training_curve.png")]
    data = splits.train
    if data.shape[1] == 1:  # no plane to draw the chapter's figure in
        written = [save_figure(density_1d_figure(flow, data), out / "density.png")]
    else:
        written = [save_figure(chapter_figure(flow, data, names=splits.columns), out / "flow.png")]
    if data.shape[1] == 2:
        written.append(save_figure(density_figure(flow, data), out / "density.png"))
    written.append(save_figure(curve, out / "training_curve.png"))
    family_figures = spec.figure_function()  # e.g. FFJORD's trajectories and density over time
    if family_figures is not None:
        written += family_figures(flow, data, out)
    return written


__all__ = ["plot_run", "new_figure", "save_figure", "chapter_figure", "latent_and_generated", "dependency_figure",
           "unit_square_images_figure", "training_animation", "density_figure", "density_1d_figure", "density_grid",
           "training_curve", "read_metrics", "ffjord_figures", "density_over_time", "sample_paths",
           "trajectories_figure", "trajectory_animation", "save_animation", "image_figures", "image_grid",
           "write_image_grid", "sample_grids_figure", "reconstruction_figure", "interpolation_figure",
           "class_density_figure", "class_samples_figure", "conditional_samples_figure", "conditional_figures"]
