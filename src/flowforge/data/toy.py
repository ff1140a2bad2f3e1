"""2-D toy densities: the book's two moons and the FFJORD paper's toy set.

Each sampler takes ``(n, rng)`` with ``rng`` a ``numpy.random.Generator`` and returns an
``(n, 2)`` array and, for the sets made of parts (which moon, mode, arm or ring), each point's
part as a label (``None`` for the others). The labels are drawn with the points, so a labelled
draw holds the very points of an unlabelled one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _sk_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """The book's data: ``sklearn.datasets.make_moons`` with noise 0.05."""
    from sklearn.datasets import make_moons  # here: sklearn takes 0.6 s to import
    return make_moons(n, noise=0.05, random_state=_sk_seed(rng))  # label 0: the upper moon


def circles(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_circles  # here: sklearn takes 0.6 s to import
    x, outer_or_inner = make_circles(n, factor=0.5, noise=0.08, random_state=_sk_seed(rng))
    return 3.0 * x, outer_or_inner


def rings(n: int, rng: np.random.Generator) -> np.ndarray:
    """Four concentric noisy rings of radii 0.75, 1.5, 2.25 and 3."""
    ring = rng.integers(1, 5, size=n)
    radius = 0.75 * ring
    angle = rng.uniform(0, 2 * np.pi, size=n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return x + 0.08 * rng.standard_normal((n, 2)), ring - 1


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    """Eight Gaussians (std 0.5) on a circle of radius 4, all scaled by 1/√2."""
    mode = rng.integers(0, 8, size=n)
    angle = mode * np.pi / 4
    centers = 4.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centers + 0.5 * rng.standard_normal((n, 2))) / np.sqrt(2), mode


def pinwheel(n: int, rng: np.random.Generator, arms: int = 5) -> np.ndarray:
    """Gaussian blobs bent into a pinwheel: radius warps the angle exponentially."""
    arm = rng.integers(0, arms, size=n)
    radial = 1.0 + 0.3 * rng.standard_normal(n)
    tangential = 0.1 * rng.standard_normal(n)
    angle = 2 * np.pi * arm / arms + 0.25 * np.exp(radial)
    cos, sin = np.cos(angle), np.sin(angle)
    return 2.0 * np.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], axis=1), arm


def two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved Archimedean spirals with Gaussian noise."""
    t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi
    first = rng.uniform(size=n) < 0.5
    sign = np.where(first, 1.0, -1.0)[:, None]
    x = sign * np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1)
    return x / 3.0 + 0.1 * rng.standard_normal((n, 2)), (~first).astype(np.int64)


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the dark squares of a 4×4 board spanning [-4, 4]²."""
    x1 = rng.uniform(-2, 2, size=n)
    x2 = rng.uniform(size=n) - 2.0 * rng.integers(0, 2, size=n) + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], axis=1), None


def swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_swiss_roll  # here: sklearn takes 0.6 s to import
    x, _ = make_swiss_roll(n, noise=1.0, random_state=_sk_seed(rng))
    return x[:, [0, 2]] / 5.0, None


Sampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]
TOY_DATASETS: dict[str, Sampler] = {
    "moons": moons,
    "circles": circles,
    "rings": rings,
    "8gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "2spirals": two_spirals,
    "checkerboard": checkerboard,
    "swissroll": swissroll,
}


# the labelled sets: how many parts each is made of (``--context label`` conditions on the part)
TOY_CLASSES = {"moons": 2, "circles": 2, "rings": 4, "8gaussians": 8, "pinwheel": 5, "2spirals": 2}


def sample_toy(name: str, n: int, seed: int) -> np.ndarray:
    """``n`` points of toy set ``name`` as float32, repeatable for a given ``seed``."""
    return TOY_DATASETS[name](n, np.random.default_rng(seed))[0].astype(np.float32)


def sample_toy_labelled(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_toy`'s points and each one's part (0 … ``TOY_CLASSES[name]`` − 1) as int64.

    >>> from flowforge.data.toy import sample_toy_labelled
    >>> x, label = sample_toy_labelled("moons", 4, seed=0)
    >>> x.shape, sorted(set(label.tolist())) <= [0, 1]
    ((4, 2), True)
    """
    x, label = TOY_DATASETS[name](n, np.random.default_rng(seed))
    if label is None:
        raise ValueError(f"{name} has no labels")
    return x.astype(np.float32), np.asarray(label, dtype=np.int64)
