"""What every figure shares: figures made without pyplot, their atomic save, the latent colouring.

Figures are ``matplotlib.figure.Figure`` objects created directly, not through pyplot, so this
package never chooses a backend and never keeps figures alive in pyplot's registry: a notebook
shows a returned figure inline (as the last expression of a cell, or with ``display(fig)``), a
script saves it with :func:`save_figure`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flowforge.atomic import atomic_target

LATENT_COLORMAP = "twilight"  # cyclic, for angles


def new_figure(rows: int = 1, columns: int = 1, figsize: tuple[float, float] = (6, 5)):
    """(figure, axes) like ``plt.subplots``, with a constrained layout and no pyplot.

    >>> from flowforge.plots import new_figure
    >>> fig, axes = new_figure(1, 2, figsize=(4, 2)); axes.shape
    (2,)
    """
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(rows, columns)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (format by suffix) whole or not at all; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path


def latent_angle(z: np.ndarray) -> np.ndarray:
    """The angle of each point's first two latent coordinates, in (−π, π]: the figures' colour."""
    return np.arctan2(z[:, 1], z[:, 0])


def padded_limits(values: np.ndarray, pad: float = 0.15) -> tuple[float, float]:
    """An axis range covering the central 99% of ``values`` with ``pad`` of its span on each side."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    span = hi - lo
    return float(lo - pad * span), float(hi + pad * span)
