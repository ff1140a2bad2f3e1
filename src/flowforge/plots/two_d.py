"""The chapter's pictures: data → f(X), latent samples → g(Z), the learned density, the curve.

Points are coloured by the angle of their latent code, so the same colour marks the
same region of latent space in every panel and the eye can follow the map. Each function
returns a ``matplotlib.figure.Figure`` (shown inline in a notebook; saved by ``save_figure``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import animation
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from flowforge.distributions import Flow
from flowforge.plots.common import LATENT_COLORMAP, latent_angle, new_figure, padded_limits
from flowforge.training.checkpoint import read_metrics
from flowforge.training.device import flow_device
from flowforge.training.evaluate import log_prob


def _scatter(ax, points: np.ndarray, colors: np.ndarray, title: str, latent: bool) -> None:
    ax.scatter(points[:, 0], points[:, 1], c=colors, cmap=LATENT_COLORMAP, vmin=-np.pi, vmax=np.pi,
               s=4, alpha=0.8, linewidths=0)
    if latent:
        for radius in (1, 2, 3):  # 1σ, 2σ, 3σ circles of the standard normal
            ax.add_patch(Circle((0, 0), radius, fill=False, color="0.6", lw=0.6, ls="--"))
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(alpha=0.2)


def latent_and_generated(flow: Flow, data: np.ndarray, n_samples: int = 3000,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f(X), Z, g(Z)): the data mapped to latent space, ``n_samples`` draws Z ~ N(0, I) (the same
    for a given ``seed``, so snapshots taken during training are comparable) and g(Z) in data space.

    >>> import numpy as np
    >>> from flowforge.plots import latent_and_generated
    >>> from flowforge.models import RealNVP
    >>> latent, z, generated = latent_and_generated(RealNVP(2, num_layers=2, hidden=8, depth=1), np.zeros((5, 2)), 7)
    >>> latent.shape, z.shape, generated.shape
    ((5, 2), (7, 2), (7, 2))
    """
    with torch.inference_mode():
        latent = flow(torch.as_tensor(data, dtype=flow_device(flow)[1]))[0].numpy()  # a float64 run's in float64
        z = flow.base.sample(n_samples, generator=torch.Generator().manual_seed(seed))
        generated = flow.inverse(z)[0].numpy()
    return latent, z.numpy(), generated


def chapter_figure(flow: Flow, data: np.ndarray, n_samples: int = 3000, seed: int = 0,
                   names: list[str] | None = None) -> Figure:
    """The book's 2×2 figure: X, f(X) (data → latent), Z ~ N(0, I) and g(Z) (latent → data);
    of more than two features, the first two, on axes labelled with ``names`` (the table's columns).

    >>> import numpy as np
    >>> from flowforge.plots import chapter_figure
    >>> from flowforge.models import RealNVP
    >>> fig = chapter_figure(RealNVP(2, num_layers=2, hidden=8, depth=1), np.random.randn(200, 2), n_samples=100)
    >>> len(fig.axes)
    4
    """
    latent, z, generated = latent_and_generated(flow, data, n_samples, seed)
    fig, axes = new_figure(2, 2, figsize=(10, 10))
    _scatter(axes[0, 0], data, latent_angle(latent), "Data X", latent=False)
    _scatter(axes[0, 1], latent, latent_angle(latent), "f(X): data → latent", latent=True)
    _scatter(axes[1, 0], z, latent_angle(z), "Z ~ N(0, I)", latent=True)
    _scatter(axes[1, 1], generated, latent_angle(z), "g(Z): latent → data", latent=False)
    for ax in (axes[0, 0], axes[1, 1]):
        ax.set_xlim(*padded_limits(data[:, 0]))
        ax.set_ylim(*padded_limits(data[:, 1]))
        if names is not None:
            ax.set_xlabel(names[0])
            ax.set_ylabel(names[1])
    title = "colour = angle of the latent code"
    if data.shape[1] > 2:
        title += f" (first 2 of {data.shape[1]} dimensions shown)"
    fig.suptitle(title, fontsize=13)
    return fig


def training_animation(steps: list[int], data: np.ndarray, z: np.ndarray, latents: list[np.ndarray],
                       generated: list[np.ndarray]) -> animation.FuncAnimation:
    """The 2×2 figure at intervals during training: X and Z stay, f(X) and g(Z) move from one
    snapshot to the next (``latents[k]``, ``generated[k]`` taken at ``steps[k]``, e.g. with
    :func:`latent_and_generated`). ``save_animation`` writes it as a GIF.

    >>> import numpy as np
    >>> from flowforge.plots import training_animation
    >>> import tempfile
    >>> from flowforge.plots.ffjord import save_animation
    >>> points = np.random.default_rng(0).normal(size=(2, 5, 2))
    >>> movie = training_animation([100, 200], points[0], points[1], [points[1]] * 2, [points[0]] * 2)
    >>> save_animation(movie, tempfile.mkdtemp() + "/training.gif").stat().st_size > 0
    True
    """
    fig, axes = new_figure(2, 2, figsize=(7, 7))
    FigureCanvasAgg(fig)  # frames are rendered off-screen, whatever backend pyplot uses
    _scatter(axes[0, 0], data, latent_angle(latents[-1]), "Data X", latent=False)
    _scatter(axes[1, 0], z, latent_angle(z), "Z ~ N(0, I)", latent=True)
    _scatter(axes[0, 1], latents[0], latent_angle(latents[-1]), "f(X): data → latent", latent=True)
    _scatter(axes[1, 1], generated[0], latent_angle(z), "g(Z): latent → data", latent=False)
    moving = [axes[0, 1].collections[0], axes[1, 1].collections[0]]
    for ax in (axes[0, 0], axes[1, 1]):
        ax.set_xlim(*padded_limits(data[:, 0]))
        ax.set_ylim(*padded_limits(data[:, 1]))
    title = fig.suptitle("")

    def draw(frame: int):
        moving[0].set_offsets(latents[frame])
        moving[1].set_offsets(generated[frame])
        title.set_text(f"step {steps[frame]:,}")
        return (*moving, title)

    return animation.FuncAnimation(fig, draw, frames=len(steps), blit=False)


def density_grid(flow: Flow, xlim: tuple[float, float], ylim: tuple[float, float],
                 resolution: int = 300, context: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p (or log p(x | c) at one condition ``context`` of shape (1, K)) on a regular
    ``resolution``² grid: returns (xs, ys, logp[len(ys), len(xs)])."""
    xs = np.linspace(*xlim, resolution)  # float64: the evaluator narrows to the flow's type
    ys = np.linspace(*ylim, resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    conditions = None if context is None else np.repeat(context, len(grid), axis=0)
    return xs, ys, log_prob(flow, grid, context=conditions).numpy().reshape(resolution, resolution)


def density_figure(flow: Flow, data: np.ndarray, resolution: int = 300) -> Figure:
    """The learned density p(x) as a heat map, alone and with the data drawn over it."""
    xlim, ylim = padded_limits(data[:, 0]), padded_limits(data[:, 1])
    xs, ys, logp = density_grid(flow, xlim, ylim, resolution)
    fig, axes = new_figure(1, 2, figsize=(13, 5.5))
    mesh = axes[0].pcolormesh(xs, ys, np.exp(logp), cmap="magma", shading="auto")
    fig.colorbar(mesh, ax=axes, label="p(x)", shrink=0.8)
    axes[0].set_title("Learned density p(x)")
    axes[1].pcolormesh(xs, ys, np.exp(logp), cmap="magma", shading="auto")
    axes[1].scatter(data[:, 0], data[:, 1], s=1.5, c="cyan", alpha=0.35, linewidths=0)
    axes[1].set_title("Density with the data over it")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    return fig


def density_1d_figure(flow: Flow, data: np.ndarray, n_samples: int = 5000, seed: int = 0) -> Figure:
    """For data of one feature: the learned density p(x) over the data's histogram, with a
    histogram of the flow's own draws.

    >>> import numpy as np
    >>> from flowforge.models import MAF
    >>> from flowforge.plots import density_1d_figure
    >>> len(density_1d_figure(MAF(1, num_layers=1, hidden=8), np.random.randn(200, 1), n_samples=100).axes)
    1
    """
    xs = np.linspace(*padded_limits(data[:, 0]), 400)
    density = np.exp(log_prob(flow, xs[:, None]).numpy())
    drawn = latent_and_generated(flow, data[:1], n_samples, seed)[2][:, 0]
    fig, ax = new_figure(figsize=(8, 5))
    bins = np.histogram_bin_edges(data[:, 0], bins="auto")
    ax.hist(data[:, 0], bins=bins, density=True, color="0.75", label=f"data ({len(data):,} points)")
    ax.hist(drawn, bins=bins, density=True, histtype="step", color="tab:blue", label=f"flow samples ({n_samples:,})")
    ax.plot(xs, density, color="tab:orange", lw=2, label="learned density p(x)")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title("Learned density p(x) of the one feature")
    ax.legend()
    return fig


def _curve_labels(config: Any) -> tuple[str, str]:
    """Legend entries for the training and validation curves of a run made with ``config``."""
    if config is None:
        return "train NLL", "validation NLL"
    train = f"train NLL + L2 penalty (λ = {config.l2:g})" if config.l2 else "train NLL"
    val = f"validation NLL (averaged weights, EMA {config.ema_decay:g})" if config.ema_decay else "validation NLL"
    return train, val


def training_curve(records: list[dict] | str | Path, config: Any = None) -> Figure:
    """Train and validation NLL against step, the best validation step marked; ``records`` are
    metrics.jsonl's lines (or the file's path). With the run's ``config`` the legend says whether
    validation used averaged (EMA) weights and whether the training loss carries an L2 penalty.

    >>> from flowforge.plots import training_curve
    >>> training_curve([{"step": 1, "train_nll": 3.0, "val_nll": 2.5}, {"step": 2, "train_nll": 2.0, "val_nll": 2.1}])
    <Figure size 800x500 with 1 Axes>
    """
    records = read_metrics(Path(records)) if isinstance(records, (str, Path)) else records
    steps = [r["step"] for r in records]
    train_label, val_label = _curve_labels(config)
    fig, ax = new_figure(figsize=(8, 5))
    if all("train_nll" in r for r in records):
        ax.plot(steps, [r["train_nll"] for r in records], label=train_label, color="tab:blue")
    ax.plot(steps, [r["val_nll"] for r in records], label=val_label, color="tab:orange", marker="o", ms=3)
    if records:
        best = min(records, key=lambda r: r["val_nll"])
        ax.axhline(best["val_nll"], color="tab:orange", lw=0.8, ls=":")
        ax.annotate(f"best {best['val_nll']:.3f} @ {best['step']}", (best["step"], best["val_nll"]),
                    textcoords="offset points", xytext=(-60, 12))
        curves = [r[k] for r in records for k in ("val_nll", "train_nll") if k in r]
        low, high = min(curves), np.percentile(curves, 90)
        ax.set_ylim(low - 0.05 * abs(high - low) - 0.02, high + 0.1 * abs(high - low) + 0.02)
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats per sample; vectors: standardised units)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
