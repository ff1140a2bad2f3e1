"""Run directories written by earlier versions still load, score the same and resume: runs_v0
before the core took contexts, runs_v1 in config format 1 (before model specs and recipes)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from flowforge.data import load_splits
from flowforge.models.specs import spec_of
from flowforge.training import load_run, nll_summary, train
from flowforge.training.evaluate import IMAGE_BATCH

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = [f"runs_v0/{name}" for name in ("realnvp", "ffjord", "glow", "realnvp-image")] + \
       [f"runs_v1/{name}" for name in ("realnvp", "nsf", "maf", "ffjord", "glow", "realnvp-image")]


@pytest.mark.parametrize("name", RUNS)
def test_old_run_evaluates_to_its_recorded_test_nll(name):
    flow, config, _ = load_run(FIXTURES / name)
    metrics = spec_of(config.model).metrics
    recorded = json.loads((FIXTURES / name / "results.json").read_text())
    test = load_splits(config.data, config.seed, config.n_train, data_dir=config.data_dir).test
    if "bits_per_dim" in metrics:  # recorded with the noise of their day: one generator (seed 0) over the batches
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            nll = -float(torch.cat([flow.discrete_log_prob(chunk, generator)
                                    for chunk in torch.as_tensor(test).split(IMAGE_BATCH)]).mean())
        assert nll == pytest.approx(recorded["test_nll"], abs=1e-4)
        assert nll_summary(flow, test, metrics)["nll"] == pytest.approx(nll, abs=0.5)  # today's noise, keyed per image
        return
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
