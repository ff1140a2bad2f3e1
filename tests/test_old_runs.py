"""Run directories written by earlier versions still load, score the same and resume: runs_v0
before the core took contexts, runs_v1 in config format 1 (before model specs and recipes)."""

import json
import shutil
from pathlib import Path

import pytest

from flowforge.data import load_splits
from flowforge.models.specs import spec_of
from flowforge.training import load_run, nll_summary, train

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = [f"runs_v0/{name}" for name in ("realnvp", "ffjord", "glow", "realnvp-image")] + \
       [f"runs_v1/{name}" for name in ("realnvp", "nsf", "maf", "ffjord", "glow", "realnvp-image")]


@pytest.mark.parametrize("name", RUNS)
def test_old_run_evaluates_to_its_recorded_test_nll(name):
    flow, config, _ = load_run(FIXTURES / name)
    metrics = spec_of(config.model).metrics
    recorded = json.loads((FIXTURES / name / "results.json").read_text())
    test = load_splits(config.data, config.seed, config.n_train, data_dir=config.data_dir).test
    assert nll_summary(flow, test, metrics)["nll"] == pytest.approx(recorded["test_nll"], abs=1e-4)


@pytest.mark.parametrize("name", RUNS)
def test_old_run_resumes(tmp_path, name):
    run = tmp_path / name.replace("/", "-")
    shutil.copytree(FIXTURES / name, run)
    _, config, _ = load_run(run)
    config.steps += 10
    results = train(config, run, resume=True, progress_bar=False)
    assert results["steps"] == config.steps
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == config.steps
