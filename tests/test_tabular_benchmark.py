"""The tabular benchmark's machinery (benchmarks/tabular.py): its true densities, its units and
every contender on a budget of a fraction of a second."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("zuko")
pytest.importorskip("nflows")

from benchmarks.densities import (CHECKERBOARD_LOG_DENSITY, checkerboard_log_density, eight_gaussians_log_density,
                                  slcp_draw, slcp_log_likelihood, slcp_simulate)
from benchmarks.tabular import load_target, standardised, train_task
from benchmarks.tabular_contenders import CONTENDERS
from flowforge.data.toy import checkerboard, eight_gaussians


def _gaussian_log_pdf(points: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = points - mean
    quad = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (quad + np.linalg.slogdet(2 * np.pi * cov)[1])


def test_slcp_likelihood_matches_a_brute_force_gaussian():
    theta, x = slcp_simulate(50, np.random.default_rng(0))
    for t, row in zip(theta, x):
        s1, s2, rho = t[2] ** 2, t[3] ** 2, np.tanh(t[4])
        cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
        expected = _gaussian_log_pdf(row.reshape(4, 2), t[:2], cov).sum()
        assert slcp_log_likelihood(row[None], t[None])[0] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_slcp_likelihood_integrates_to_one_and_matches_the_simulator():
    theta = np.array([[0.5, -1.0, 1.1, -0.9, 0.7]])
    s1, s2 = theta[0, 2] ** 2, theta[0, 3] ** 2
    h = 0.02
    g1 = theta[0, 0] + np.arange(-8 * s1, 8 * s1, h)
    g2 = theta[0, 1] + np.arange(-8 * s2, 8 * s2, h)
    a, b = np.meshgrid(g1, g2)
    one_draw = np.stack([a.ravel(), b.ravel()], 1)
    # the four draws at one point: log p = 4 log p_1(point)
    log_p1 = slcp_log_likelihood(np.tile(one_draw, 4), np.repeat(theta, len(one_draw), 0)) / 4
    assert np.exp(log_p1).sum() * h * h == pytest.approx(1.0, abs=1e-3)
    # the simulator draws from that density: its draws' moments
    draws = slcp_draw(np.repeat(theta, 5000, 0), np.random.default_rng(2)).reshape(-1, 2)
    assert draws.mean(0) == pytest.approx(theta[0, :2], abs=0.02)
    assert np.cov(draws.T) == pytest.approx(np.array([[s1 * s1, np.tanh(0.7) * s1 * s2],
                                                      [np.tanh(0.7) * s1 * s2, s2 * s2]]), abs=0.02)


def test_toy_densities_are_normalised_and_cover_their_generators():
    h = 0.01
    grid = np.arange(-5, 5, h) + h / 2
    a, b = np.meshgrid(grid, grid)
    points = np.stack([a.ravel(), b.ravel()], 1)
    for density in (checkerboard_log_density, eight_gaussians_log_density):
        assert np.exp(density(points)).sum() * h * h == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    assert np.all(checkerboard_log_density(checkerboard(20000, rng)[0]) == CHECKERBOARD_LOG_DENSITY)
    # 8gaussians: the mean log density of its draws is the mixture's negative entropy; a density
    # 10% too wide or too narrow scores less on those draws (Gibbs' inequality)
    x, _ = eight_gaussians(200000, rng)
    assert eight_gaussians_log_density(x).mean() > eight_gaussians_log_density(x * 1.1).mean() + math.log(1.1 ** 2)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=8, range=[[-4, 4], [-4, 4]])
    centres = np.arange(-3.5, 4, 1.0)
    c1, c2 = np.meshgrid(centres, centres, indexing="ij")
    fine = np.linspace(-0.5, 0.5, 21)[:-1] + 0.025
    expected = np.zeros_like(counts)
    for dx in fine:
        for dy in fine:
            cells = np.stack([(c1 + dx).ravel(), (c2 + dy).ravel()], 1)
            expected += np.exp(eight_gaussians_log_density(cells)).reshape(8, 8) * 0.05 ** 2
    assert counts / len(x) == pytest.approx(expected, abs=3e-3)


def test_standardisation_keeps_densities_in_data_units():
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -2.0], [3.0, 0.5], size=(5000, 2))
    target = standardised(x, x[:10], x[:100], 2, None, "table")
    u = target.test.astype(np.float64)
    log_q_std = -0.5 * (u * u).sum(1) - math.log(2 * math.pi)
    mean, std = x.mean(0), x.std(0)
    expected = (-0.5 * ((x[:100] - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)
    assert log_q_std - target.log_scale == pytest.approx(expected, abs=1e-5)


def test_slcp_target_is_conditional_and_standardised():
    target = load_target("slcp-10k", 0)
    assert (target.dim, target.context_dim) == (8, 5)
    assert len(target.train) == 9000 and len(target.val) == 1000 and len(target.test) == 10000
    assert np.abs(target.train.mean(0)).max() < 1e-4 and np.abs(target.train.std(0) - 1).max() < 1e-4
    assert np.isfinite(target.test_truth).all()


@pytest.mark.parametrize("name", list(CONTENDERS))
def test_every_contender_trains_and_scores_a_nonnegative_gap(name):
    result = train_task({"contender": name, "target": "8gaussians", "seed": 0, "budget_s": 0.3, "evals": 2,
                         "batch_size": 64, "size": {"layers": 2, "hidden": 16, "depth": 2, "bins": 4}})
    assert result["steps"] > 0 and result["non_finite"] == 0
    # a crude model's expected KL to the truth is positive; the estimate is within noise of that
    assert result["gap"] > -3 * result["gap_stderr"]
    assert result["gap"] == pytest.approx(result["test_nll"] - result["truth_nll"], abs=1e-6)
