"""A continuous flow's pictures: the marginal density p_t at several times, and samples
travelling from the latent (t = 0) to the data (t = T) as stills and as an animated GIF.

    log p_t(x) = log p_z(z(0)) + ∫_t^0 Tr ∂f/∂z ds,    z(t) = x
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import animation
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flowforge.atomic import atomic_target
from flowforge.models.ffjord import CNFFlow
from flowforge.plots.common import LATENT_COLORMAP, latent_angle, new_figure, padded_limits, save_figure
from flowforge.training.device import flow_device


def sample_paths(flow: CNFFlow, n: int = 500, frames: int = 41, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Times (frames,) from 0 to T·L and the paths (frames, n, D) of n latent draws, in data units."""
    times = np.linspace(0.0, flow.cnf.total_time, frames)
    z = flow.base.sample(n, generator=torch.Generator().manual_seed(seed))
    return times, flow.trajectory(z, times).numpy()


def density_over_time(flow: CNFFlow, data: np.ndarray, panels: int = 5, resolution: int = 120) -> Figure:
    """p_t(x) on the data's window at ``panels`` times from the base (t = 0) to the model (t = T·L)."""
    xlim, ylim = padded_limits(data[:, 0]), padded_limits(data[:, 1])
    xs = np.linspace(*xlim, resolution)  # float64, then the flow's type
    ys = np.linspace(*ylim, resolution)
    grid = torch.from_numpy(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)).to(flow_device(flow)[1])
    times = np.linspace(0.0, flow.cnf.total_time, panels)
    fig, axes = new_figure(1, panels, figsize=(3.2 * panels, 3.4))
    for ax, t in zip(np.atleast_1d(axes), times):
        with torch.inference_mode():
            density = flow.marginal_log_prob(grid, float(t)).exp().numpy().reshape(resolution, resolution)
        ax.pcolormesh(xs, ys, density, cmap="magma", shading="auto")
        ax.set_title(f"p_t at t = {t:.2f}")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("The density flowing from the base (left) to the model (right)")
    return fig


def trajectories_figure(times: np.ndarray, paths: np.ndarray, data: np.ndarray) -> Figure:
    """Each sample's path from its latent draw (small dot) to its data point (large dot), coloured by latent angle."""
    colors = latent_angle(paths[0])
    cmap = matplotlib.colormaps[LATENT_COLORMAP]
    fig, ax = new_figure(figsize=(7, 7))
    ax.scatter(data[:, 0], data[:, 1], s=1, c="0.85", linewidths=0)
    for i in range(paths.shape[1]):
        ax.plot(paths[:, i, 0], paths[:, i, 1], lw=0.5, alpha=0.5, color=cmap((colors[i] + np.pi) / (2 * np.pi)))
    for frame, size in ((0, 3), (-1, 8)):
        ax.scatter(paths[frame, :, 0], paths[frame, :, 1], c=colors, cmap=LATENT_COLORMAP, vmin=-np.pi,
                   vmax=np.pi, s=size, linewidths=0)
    ax.set_title(f"Trajectories from z (t = 0) to x (t = {times[-1]:.2f})")
    ax.set_aspect("equal")
    return fig


def trajectory_animation(times: np.ndarray, paths: np.ndarray, data: np.ndarray) -> animation.FuncAnimation:
    """The samples moving along their paths over the data in grey, as an animation (``save_animation``
    writes it as a GIF; a notebook shows it with ``IPython.display.HTML(movie.to_jshtml())``)."""
    colors = latent_angle(paths[0])
    lows, highs = paths[..., :2].min(axis=(0, 1)), paths[..., :2].max(axis=(0, 1))
    fig, ax = new_figure(figsize=(5, 5))
    FigureCanvasAgg(fig)  # frames are rendered off-screen, whatever backend pyplot uses
    ax.scatter(data[:, 0], data[:, 1], s=1, c="0.85", linewidths=0)
    dots = ax.scatter(paths[0, :, 0], paths[0, :, 1], c=colors, cmap=LATENT_COLORMAP, vmin=-np.pi, vmax=np.pi,
                      s=5, linewidths=0)
    ax.set_xlim(lows[0], highs[0])
    ax.set_ylim(lows[1], highs[1])
    ax.set_aspect("equal")
    title = ax.set_title("")

    def draw(frame: int):
        dots.set_offsets(paths[frame, :, :2])
        title.set_text(f"t = {times[frame]:.2f}")
        return dots, title

    return animation.FuncAnimation(fig, draw, frames=len(times), blit=False)


def save_animation(movie: animation.FuncAnimation, path: str | Path, fps: int = 12) -> Path:
    """Write an animation as a GIF, whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        movie.save(tmp, writer=animation.PillowWriter(fps=fps), dpi=80)
    return path


def ffjord_figures(flow: CNFFlow, data: np.ndarray, out: Path) -> list[Path]:
    """The continuous flow's figures for data with at least 2 features (density panels only for 2)."""
    if data.shape[1] < 2:
        return []
    times, paths = sample_paths(flow)
    written = [save_figure(trajectories_figure(times, paths, data), out / "trajectories.png"),
               save_animation(trajectory_animation(times, paths, data), out / "trajectories.gif")]
    if data.shape[1] == 2:
        written.insert(0, save_figure(density_over_time(flow, data), out / "density_over_time.png"))
    return written
