"""One measurement of one library in a fresh process (so peak memory is its own).

    python -m benchmarks.worker '{"library": "zuko", "task": "throughput", "data": "moons", ...}'

prints one JSON object.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time

import numpy as np
import torch

from benchmarks.contenders import LIBRARIES
from benchmarks.data import benchmark_splits
from flowforge.training.loop import train_step


def _train_step(model, optimizer, parameters: list, batch, step: int) -> None:
    """flowforge's trainer's own step, for every contender (each with its library's loss, optimiser
    and clipping), then the contender's after-step hook (a weight average's update)."""
    train_step(model.loss, optimizer, parameters, batch, model.grad_clip)
    model.after_step(step)


def _batches(x: torch.Tensor, seed: int, batch: int):
    # The batch generator must not share the global generator's seed: the global one draws the
    # training noise, and two MT19937 streams from one seed would make that noise replay the
    # batch draws (measured: flowforge's moons test NLL 1.21 instead of 1.17 after 3,000 steps).
    generator = torch.Generator().manual_seed(seed + 1)
    while True:
        yield x[torch.randint(len(x), (batch,), generator=generator)]


def _rate(fn, count: int, repeat_until: float = 1.0) -> float:
    """Items per second of ``fn`` (which processes ``count`` items), run for at least ``repeat_until`` s."""
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < repeat_until:
        fn()
        done += count
    return done / (time.perf_counter() - start)


def throughput(spec: dict) -> dict:
    splits = benchmark_splits(spec["data"], spec.get("seed", 0))
    torch.manual_seed(spec.get("seed", 0))
    model = LIBRARIES[spec["library"]](splits.dim, **spec["architecture"])
    optimizer = model.optimizer(model.parameters(), lr=1e-3)
    parameters = list(model.parameters())
    batches = _batches(torch.from_numpy(splits.train), spec.get("seed", 0), spec["batch_size"])

    def step():
        _train_step(model, optimizer, parameters, next(batches), 0)

    for _ in range(spec.get("warmup_steps", 20)):
        step()
    steps = spec.get("steps", 100)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    steps_per_s = steps / (time.perf_counter() - start)

    points = torch.from_numpy(splits.test[:8192])
    with torch.no_grad(), model.evaluating():  # as each library evaluates (flowforge: float32 networks)
        log_prob_rate = _rate(lambda: model.log_prob(points), len(points))
        sample_rate = _rate(lambda: model.sample(8192), 8192)
    return {"train_steps_per_s": steps_per_s, "log_prob_per_s": log_prob_rate, "samples_per_s": sample_rate,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def time_to_target(spec: dict) -> dict:
    """Train until the test NLL reaches ``target`` (evaluation time not counted) or ``budget_s`` passes."""
    from flowforge.training import TrainConfig, learning_rate

    splits = benchmark_splits(spec["data"], spec.get("seed", 0))
    torch.manual_seed(spec.get("seed", 0))
    model = LIBRARIES[spec["library"]](splits.dim, **spec["architecture"])
    schedule = TrainConfig(**spec["schedule"]) if spec.get("schedule") else None
    lr = spec.get("lr", 1e-3)
    optimizer = model.optimizer(model.parameters(), lr=lr)
    parameters = list(model.parameters())
    batches = _batches(torch.from_numpy(splits.train), spec.get("seed", 0), spec["batch_size"])
    test = torch.from_numpy(splits.test)
    clock, step, curve, reached = 0.0, 0, [], None
    while clock < spec["budget_s"] and reached is None:
        start = time.perf_counter()
        for _ in range(spec["eval_every"]):
            if schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(schedule, min(step, schedule.steps - 1))
            step += 1
            _train_step(model, optimizer, parameters, next(batches), step)
        clock += time.perf_counter() - start
        with torch.no_grad(), model.evaluating():
            nll = float(-model.log_prob(test).mean())
        curve.append((round(clock, 3), step, nll))
        if nll <= spec["target"]:
            reached = clock
    best = min(c[2] for c in curve)
    return {"seconds_to_target": reached, "steps": step, "final_nll": curve[-1][2], "best_nll": best,
            "curve": curve}


TASKS = {"throughput": throughput, "target": time_to_target}


def task(name: str):
    """A task of this module by name, or any benchmark's as ``"module:function"``."""
    if ":" in name:
        module, _, function = name.partition(":")
        return getattr(importlib.import_module(module), function)
    return TASKS[name]


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    np.random.seed(0)
    print(json.dumps({**spec, **task(spec["task"])(spec)}))
