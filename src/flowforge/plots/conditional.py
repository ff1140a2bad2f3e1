"""Figures of a conditional flow p(x | c), one condition at a time: the density of each class of a
labelled 2-D set, a grid of samples per class of images, and for a table's context columns the
data beside draws at the same conditions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from flowforge.data.context import ContextInfo, one_hot
from flowforge.plots.common import new_figure, padded_limits, save_figure
from flowforge.plots.images import _show
from flowforge.plots.two_d import density_grid


def class_density_figure(flow, data: np.ndarray, labels: np.ndarray, info: ContextInfo,
                         resolution: int = 150) -> Figure:
    """p(x | class) as a heat map for each class, with that class's points over it.

    >>> import numpy as np
    >>> from flowforge.data import ContextInfo
    >>> from flowforge.plots import class_density_figure
    >>> from flowforge.models import RealNVP
    >>> flow = RealNVP(2, num_layers=2, hidden=8, depth=1, context_dim=2)
    >>> info = ContextInfo("label", ["0", "1"])
    >>> len(class_density_figure(flow, np.random.randn(50, 2), np.arange(50) % 2, info, resolution=10).axes)
    2
    """
    xlim, ylim = padded_limits(data[:, 0]), padded_limits(data[:, 1])
    fig, axes = new_figure(1, info.dim, figsize=(3.6 * info.dim, 3.8))
    for k, ax in enumerate(np.atleast_1d(axes)):
        xs, ys, logp = density_grid(flow, xlim, ylim, resolution, one_hot(np.array([k]), info.dim))
        ax.pcolormesh(xs, ys, np.exp(logp), cmap="magma", shading="auto")
        mine = data[labels == k]
        ax.scatter(mine[:, 0], mine[:, 1], s=1.0, c="cyan", alpha=0.3, linewidths=0)
        ax.set_title(f"p(x | label {info.names[k]})")
        ax.set_aspect("equal")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    fig.suptitle("The learned density of each class, with its data")
    return fig


def class_samples_figure(flow, info: ContextInfo, per_class: int = 10, temperature: float = 0.8,
                         seed: int = 0) -> Figure:
    """A row of ``per_class`` samples for each class of a class-conditional image flow."""
    conditions = torch.as_tensor(one_hot(np.arange(info.dim), info.dim), dtype=next(flow.parameters()).dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = flow.sample((per_class,), conditions, temperature=temperature, generator=generator)  # (n, K, ...)
    images = flow.to_images(x.transpose(0, 1).reshape(-1, *x.shape[2:])).numpy()
    fig, ax = new_figure(figsize=(1.0 * per_class + 1, 1.0 * info.dim + 0.8))
    _show(ax, images, flow.bits, f"Samples of each class (rows: {', '.join(info.names)}; T = {temperature})",
          columns=per_class)
    return fig


def conditional_samples_figure(flow, data: np.ndarray, conditions: np.ndarray, names: list[str],
                               seed: int = 0) -> Figure:
    """The held-out rows beside one draw x ~ p(x | c) at each row's own condition c, on the first two
    modelled columns (a histogram of the column when there is one)."""
    dtype = next(flow.parameters()).dtype
    with torch.no_grad():
        drawn = flow.sample((), torch.as_tensor(conditions, dtype=dtype),
                            generator=torch.Generator().manual_seed(seed)).numpy()
    fig, axes = new_figure(1, 2, figsize=(10, 4.6))
    for ax, points, title in zip(axes, (data, drawn), ("held-out rows", "draws at the same conditions")):
        if data.shape[1] == 1:
            ax.hist(points[:, 0], bins=50, range=padded_limits(data[:, 0]), color="0.3")
            ax.set_xlabel(names[0])
        else:
            ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5, linewidths=0)
            ax.set_xlim(*padded_limits(data[:, 0]))
            ax.set_ylim(*padded_limits(data[:, 1]))
            ax.set_xlabel(names[0])
            ax.set_ylabel(names[1])
        ax.set_title(title)
    return fig


def conditional_figures(flow, splits, out: Path) -> list[Path]:
    """A conditional run's figures into ``out``: per class for labels, at the rows' conditions for columns."""
    flow.eval()
    info = splits.context_info
    if info.kind == "label" and len(splits.shape) == 3:
        return [save_figure(class_samples_figure(flow, info), out / "samples_by_class.png")]
    test, conditions = splits.test[:5000], splits.context[2][:5000]
    if info.kind == "label" and splits.shape == (2,):
        figure = class_density_figure(flow, test, conditions.argmax(1), info)
        return [save_figure(figure, out / "density_by_class.png")]
    names = splits.columns or [f"x{i}" for i in range(splits.shape[0])]
    return [save_figure(conditional_samples_figure(flow, test, conditions, names), out / "conditional_samples.png")]
