"""Training in stages: the same run stopped every ``every`` steps and resumed, handing back the
model as it stands at each stop — what the book's notebook does with a Keras callback that draws
its figure every 10 epochs.

A stop is the trainer's own ``stop_after`` and a restart its exact ``resume``, so the stages add
up to the uninterrupted run (the schedule, the batches and the random state carry over).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from flowforge.training.checkpoint import LAST_CHECKPOINT
from flowforge.training.config import TrainConfig
from flowforge.training.loop import train
from flowforge.training.run import load_run


def stage_ends(steps: int, every: int) -> list[int]:
    """The steps a run of ``steps`` stops at when staged ``every`` steps (the last is ``steps``).

    >>> from flowforge.training.stages import stage_ends
    >>> stage_ends(10, 4)
    [4, 8, 10]
    """
    if every < 1:
        raise ValueError(f"stages need every >= 1, got {every}")
    return [*range(every, steps, every), steps]


def train_in_stages(config: TrainConfig, run_dir: str | Path, every: int, *, force: bool = False,
                    progress_bar: bool = False) -> Iterator[tuple[int, Any, dict[str, Any]]]:
    """Train ``config`` into ``run_dir``, yielding ``(step, flow, results)`` at every stop: the
    flow with the weights of that step (evaluation mode), and the results of the best weights so far.

    >>> from flowforge.training.stages import train_in_stages
    >>> from flowforge.training import TrainConfig
    >>> import tempfile
    >>> config = TrainConfig(steps=4, eval_every=2, n_train=64, batch_size=16, model_options={"num_layers": 2,
    ...                      "hidden": 8, "depth": 1})
    >>> [step for step, flow, results in train_in_stages(config, tempfile.mkdtemp(), every=2)]
    [2, 4]
    """
    for number, stop in enumerate(stage_ends(config.steps, every)):
        results = train(config, run_dir, resume=number > 0, force=force and number == 0,
                        progress_bar=progress_bar, stop_after=stop)
        flow, _, _ = load_run(run_dir, weights=LAST_CHECKPOINT)
        yield stop, flow, results
