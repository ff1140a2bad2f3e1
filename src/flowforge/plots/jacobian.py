"""Pictures of Jacobians: what a determinant measures, and which inputs a coupling lets each output see.

For a linear map A the unit square's image is a parallelogram of signed area det A (negative when
A flips the orientation); for a flow, the Jacobian J = ∂f/∂x plays A's part near each point.
Each function returns a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from flowforge.plots.common import new_figure

UNIT_SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def unit_square_images_figure(matrices: list[np.ndarray]) -> Figure:
    """One panel per 2×2 matrix A: the unit square, its image A·square, and the images of
    e₁ and e₂; the title gives det A (the image's signed area).

    >>> import numpy as np
    >>> from flowforge.plots import unit_square_images_figure
    >>> fig = unit_square_images_figure([np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])])
    >>> [ax.get_title() for ax in fig.axes]
    ['det A = 1', 'det A = -1']
    """
    fig, axes = new_figure(1, len(matrices), figsize=(3.6 * len(matrices), 3.6))
    for ax, matrix in zip(np.atleast_1d(axes), matrices):
        matrix = np.asarray(matrix, dtype=float)
        image = UNIT_SQUARE @ matrix.T
        ax.add_patch(Polygon(UNIT_SQUARE, closed=True, fill=False, ls="--", color="0.5"))
        ax.add_patch(Polygon(image, closed=True, alpha=0.35, color="C0"))
        for column, color in zip(matrix.T, ("C3", "C2")):
            ax.annotate("", xy=column, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": color, "lw": 2})
        corners = np.vstack([UNIT_SQUARE, image])
        low, high = corners.min() - 0.3, corners.max() + 0.3
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.grid(alpha=0.2)
        ax.set_title(f"det A = {np.linalg.det(matrix):.3g}")
    return fig


def dependency_figure(jacobians: dict[str, np.ndarray], tolerance: float = 1e-9) -> Figure:
    """One panel per square Jacobian J (titled by its key): inputs x_i on the left, outputs y_j on
    the right, a line from x_i to y_j where ∂y_j/∂x_i ≠ 0 — grey where y_j = x_j passes through
    (a row of the identity), coloured where x_i conditions a transformed y_j.

    >>> import numpy as np
    >>> from flowforge.plots import dependency_figure
    >>> fig = dependency_figure({"one coupling": np.array([[1.0, 0.0], [0.5, 2.0]])})
    >>> len(fig.axes[0].lines)   # x1→y1, x1→y2, x2→y2
    3
    """
    fig, axes = new_figure(1, len(jacobians), figsize=(3.4 * len(jacobians), 3.4))
    for ax, (title, jacobian) in zip(np.atleast_1d(axes), jacobians.items()):
        jacobian = np.asarray(jacobian, dtype=float)
        dim = jacobian.shape[0]
        rows = np.arange(dim)[::-1]  # x1 / y1 at the top
        for j in range(dim):
            passes = np.allclose(jacobian[j], np.eye(dim)[j], atol=tolerance)
            for i in np.flatnonzero(np.abs(jacobian[j]) > tolerance):
                ax.plot([0, 1], [rows[i], rows[j]], color="0.6" if passes else f"C{i}", lw=2 if passes else 1.5)
        for i in range(dim):
            ax.text(-0.08, rows[i], f"$x_{i + 1}$", ha="right", va="center", fontsize=13)
            ax.text(1.08, rows[i], f"$y_{i + 1}$", ha="left", va="center", fontsize=13)
        ax.set_xlim(-0.4, 1.4)
        ax.set_ylim(-0.5, dim - 0.5)
        ax.axis("off")
        ax.set_title(title)
    return fig
