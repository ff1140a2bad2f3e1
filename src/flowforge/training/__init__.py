"""Training, evaluation and run directories."""

from flowforge.training.config import TrainConfig
from flowforge.training.evaluate import log_prob, nll_summary
from flowforge.training.loop import learning_rate, train
from flowforge.training.run import build_flow, load_run

__all__ = ["TrainConfig", "train", "learning_rate", "load_run", "build_flow", "log_prob", "nll_summary"]
