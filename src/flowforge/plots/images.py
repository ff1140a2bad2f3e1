"""Pictures of an image flow: sample grids by temperature, reconstructions x → z → x, latent interpolations.

Images arrive as stored (the 8-bit scale, quantised at the flow's ``bits``) and are shown with
their levels stretched to the full grey (or colour) range.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from flowforge.distributions.dequantization import STORED_BITS
from flowforge.plots.common import new_figure, save_figure
from flowforge.training.checkpoint import atomic_write_bytes
from flowforge.training.device import flow_device

TEMPERATURES = (0.5, 0.7, 0.85, 1.0)


def display_pixels(images: np.ndarray, bits: int) -> np.ndarray:
    """8-bit-scale images quantised at ``bits`` → uint8 with the levels stretched to 0…255."""
    levels = np.floor(np.asarray(images, dtype=np.float64) / 2 ** (STORED_BITS - bits))
    return np.round(np.clip(levels, 0, 2 ** bits - 1) * 255 / (2 ** bits - 1)).astype(np.uint8)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 1, fill: int = 128) -> np.ndarray:
    """(N, C, H, W) → one (rows·(H+pad)−pad, cols·(W+pad)−pad[, 3]) picture, rows filled left to right,
    images apart by ``pad`` pixels of value ``fill`` (mid grey, visible on black and white backgrounds).

    >>> import numpy as np
    >>> from flowforge.plots import image_grid
    >>> image_grid(np.zeros((6, 1, 4, 4), np.uint8), columns=3).shape
    (9, 14)
    """
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((c, rows * (h + pad) - pad, columns * (w + pad) - pad), fill, dtype=images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[:, r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = image
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def write_image_grid(path: str | Path, images: np.ndarray, bits: int, columns: int | None = None) -> Path:
    """Write 8-bit-scale images as one PNG grid, pixel for pixel (atomically)."""
    from PIL import Image

    path = Path(path)
    buffer = io.BytesIO()
    Image.fromarray(image_grid(display_pixels(images, bits), columns)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _show(ax, images: np.ndarray, bits: int, title: str, columns: int | None = None) -> None:
    ax.imshow(image_grid(display_pixels(images, bits), columns), cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")


def sample_grids_figure(flow, temperatures=TEMPERATURES, n: int = 64, seed: int = 0) -> Figure:
    """One grid of ``n`` samples per temperature T (latent z ~ N(0, T²I)), the same z for every T."""
    z = flow.base.sample(n, generator=torch.Generator().manual_seed(seed))
    fig, axes = new_figure(1, len(temperatures), figsize=(4 * len(temperatures), 4.4))
    for ax, temperature in zip(np.atleast_1d(axes), temperatures):
        with torch.no_grad():
            x, _ = flow.inverse(z * temperature)
        _show(ax, flow.to_images(x).numpy(), flow.bits, f"T = {temperature}")
    fig.suptitle("Samples by temperature")
    return fig


def reconstruction_figure(flow, images: np.ndarray, n: int = 8, seed: int = 0) -> Figure:
    """Test images, their reconstructions g(f(x)) and the latents f(x), one column per image."""
    x = flow.dequantize(torch.as_tensor(images[:n], dtype=flow_device(flow)[1]), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        z, _ = flow.forward(x)
        back, _ = flow.inverse(z)
    error = float((back - x).abs().max())
    latent = (z.clamp(-3, 3) + 3) / 6  # shown as an image: z = −3 … 3 → black … white
    fig, axes = new_figure(3, 1, figsize=(1.2 * len(x) + 1, 4.6))
    _show(axes[0], flow.to_images(x).numpy(), flow.bits, "x (test images)", columns=len(x))
    _show(axes[1], flow.to_images(back).numpy(), flow.bits, f"g(f(x)): max |error| {error:.1e}", columns=len(x))
    _show(axes[2], (latent.numpy() * 255).round(), STORED_BITS, "z = f(x), −3…3 as black…white", columns=len(x))
    return fig


def interpolation_figure(flow, images: np.ndarray, pairs: int = 4, steps: int = 9) -> Figure:
    """Decode (1 − t)·f(a) + t·f(b) for test images a, b: one row per pair, t from 0 to 1."""
    x = flow.dequantize(torch.as_tensor(images[:2 * pairs], dtype=flow_device(flow)[1]),
                        torch.Generator().manual_seed(0))
    rows = [flow.interpolate(x[2 * i], x[2 * i + 1], steps) for i in range(len(x) // 2)]
    fig, ax = new_figure(figsize=(1.1 * steps + 1, 1.1 * len(rows) + 0.8))
    _show(ax, flow.to_images(torch.cat(rows)).numpy(), flow.bits, "Latent interpolation between test images",
          columns=steps)
    return fig


def image_figures(flow, test_images: np.ndarray, out: Path) -> list[Path]:
    """Every image figure of a run into ``out``: samples.png, reconstructions.png, interpolation.png."""
    flow.eval()
    return [save_figure(sample_grids_figure(flow), out / "samples.png"),
            save_figure(reconstruction_figure(flow, test_images), out / "reconstructions.png"),
            save_figure(interpolation_figure(flow, test_images), out / "interpolation.png")]
