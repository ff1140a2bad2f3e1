"""Training, evaluation and run directories."""

from flowforge.lazy import lazy_names
from flowforge.training.config import TrainConfig

__all__ = ["TrainConfig", "train", "learning_rate", "train_step", "load_run", "build_flow", "log_prob", "nll_summary"]
__getattr__, __dir__ = lazy_names(__name__, {"train": ".loop", "learning_rate": ".loop", "train_step": ".loop",
                                             "load_run": ".run", "build_flow": ".run", "log_prob": ".evaluate",
                                             "nll_summary": ".evaluate"})
