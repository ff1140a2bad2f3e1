import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the shared transform test base

from flowforge.training import TrainConfig, train  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

def pytest_generate_tests(metafunc):
    """Run the shared transform checks once per context size the class lists (0: none)."""
    if "context_dim" in metafunc.fixturenames and metafunc.cls is not None:
        dims = getattr(metafunc.cls, "context_dims", (0,))
        metafunc.parametrize("context_dim", dims, ids=[f"context{d}" for d in dims])


SMALL_MODEL = {"num_layers": 4, "hidden": 64, "depth": 2}


def small_config(**overrides) -> TrainConfig:
    values = dict(data="moons", steps=300, batch_size=256, lr=3e-3, eval_every=100, seed=0,
                  model_options=dict(SMALL_MODEL))
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A small RealNVP trained briefly on moons; tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("runs") / "moons"
    train(small_config(), run, progress_bar=False)
    return run
