"""The README's demo target, measured (slow: run with `make test-all` or `pytest -m slow`)."""

import pytest

from flowforge.training import TrainConfig, train


@pytest.mark.slow
def test_default_moons_run_reaches_the_issue_target(tmp_path):
    results = train(TrainConfig(), tmp_path / "moons", progress_bar=False)
    assert results["test_nll"] <= 1.20, results
