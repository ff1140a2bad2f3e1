"""Benchmark data: the book's standardised moons and a 16-D Gaussian mixture."""

from __future__ import annotations

import numpy as np

from flowforge.data import Splits, load_splits

GMM_DIM, GMM_COMPONENTS = 16, 8


def gaussian_mixture(n: int, seed: int) -> np.ndarray:
    """A fixed 16-D mixture (means and scales from seed 1234), sampled with ``seed``."""
    params = np.random.default_rng(1234)
    means = 3.0 * params.normal(size=(GMM_COMPONENTS, GMM_DIM))
    scales = params.uniform(0.3, 1.0, size=(GMM_COMPONENTS, GMM_DIM))
    rng = np.random.default_rng(seed)
    component = rng.integers(GMM_COMPONENTS, size=n)
    return (means[component] + scales[component] * rng.normal(size=(n, GMM_DIM))).astype(np.float32)


def _standardised(train: np.ndarray, *others: np.ndarray) -> Splits:
    mean, std = train.mean(0), train.std(0)
    return Splits(*((a - mean) / std for a in (train, *others)))


def benchmark_splits(name: str, seed: int = 0) -> Splits:
    """Standardised train/val/test arrays (statistics of the training split), as the book does."""
    if name == "gmm16":
        return _standardised(gaussian_mixture(20_000, seed), gaussian_mixture(2_000, seed + 1),
                             gaussian_mixture(10_000, seed + 2))
    s = load_splits(name, seed)
    return _standardised(s.train, s.val, s.test)


def moons_defaults():
    """flowforge's trainer defaults for moons, as its recipe resolves them (3,000 training points)."""
    from flowforge.models.specs import DataInfo
    from flowforge.training import TrainConfig

    return TrainConfig(data="moons").resolved(DataInfo("toy", 3000, (2,)))
