"""The training loop: read it top to bottom.

Adam(W) on minibatches drawn with a seeded generator, linear warm-up then cosine decay,
gradient clipping, validation every ``eval_every`` steps, the best weights kept by
validation NLL, a full checkpoint (model, optimiser, RNG, step) written atomically at
every evaluation, and a guard that never lets a NaN reach a checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flowforge.data import changed_data, column_problems, data_digest, is_toy, load_splits
from flowforge.data.files import header_problem
from flowforge.errors import FlowforgeError, warn
from flowforge.training.checkpoint import (BEST_WEIGHTS, CONFIG, LAST_CHECKPOINT, METRICS, RESULTS,
                                           atomic_write_bytes, load_tensors, load_weights, optimizer_from_tensors,
                                           optimizer_to_tensors, read_json, read_metrics, save_tensors, split_prefix,
                                           write_json)
from flowforge.training import distributed
from flowforge.training.ema import EMA
from flowforge.training.progress import tqdm
from flowforge.training.regularization import l2_penalty
from flowforge.training.config import CONFIG_VERSION, TrainConfig, versions
from flowforge.training.device import denormals_flushed, forked_rng, resolve_device, resolve_dtype
from flowforge.training.evaluate import gaussian_baseline_nll, nll_summary, standardization_log_scale
from flowforge.models.specs import DataInfo, spec_of
from flowforge.training.run import build_flow, check_flow_size, check_path_encoding
from flowforge.training.rundir import MARKER, RUN_FILES, claim_run_dir, clear_run, record_files
from flowforge.training.validate import check_weights_file_size
from flowforge.transforms import Whiten, fit_standardization

MAX_NAN_EVENTS = 3  # non-finite steps tolerated (rolled back or skipped) before stopping


@dataclass
class Progress:
    """What a checkpoint must carry, besides tensors, to continue a run exactly."""
    step: int = 0
    best_val: float = math.inf
    best_step: int = -1
    lr_scale: float = 1.0       # halved at every NaN rollback
    nan_events: int = 0         # non-finite steps met so far
    stale_evals: int = 0        # validations since the best one (early stopping)
    elapsed: float = 0.0        # seconds of training so far, across resumes


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step.

    The warm-up is capped at a tenth of the run so that short runs still decay.
    """
    warmup = min(config.warmup_steps, config.steps // 10)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return cosine_decay(config.lr, (step - warmup) / max(1, config.steps - warmup), config.min_lr_ratio)


def cosine_decay(peak: float, fraction: float, floor_ratio: float = 0.0) -> float:
    """``peak`` decayed along a half cosine to ``peak * floor_ratio`` as ``fraction`` goes 0 → 1 (then held)."""
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, fraction))))
    return peak * (floor_ratio + (1 - floor_ratio) * cosine)


def training_loss(flow, batch: torch.Tensor, objective: str, context: torch.Tensor | None = None) -> torch.Tensor:
    """The loss to minimise: -mean log p(x | c), unless the model defines its own ``training_loss``
    (a continuous flow's regularised or flow-matching objective, say)."""
    return flow.training_loss(batch, objective, context)


def snapshot_state(flow, optimizer, ema: EMA, generator, progress: Progress) -> dict[str, Any]:
    return {"model": copy.deepcopy(flow.state_dict()), "optim": copy.deepcopy(optimizer.state_dict()),
            "ema": ema.state_dict(), "rng": generator.get_state(), "progress": copy.copy(progress)}


def restore_state(snapshot, flow, optimizer, ema: EMA, generator) -> Progress:
    flow.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optim"])
    ema.load_state_dict(snapshot["ema"])
    generator.set_state(snapshot["rng"])
    return copy.copy(snapshot["progress"])


def save_checkpoint(run_dir: Path, flow, optimizer, ema: EMA, generator, progress: Progress) -> None:
    optim_tensors, param_groups = optimizer_to_tensors(optimizer)
    tensors = {**{f"model.{k}": v for k, v in flow.state_dict().items()},
               **{f"optim.{k}": v for k, v in optim_tensors.items()},
               **{f"ema.{k}": v for k, v in ema.state_dict().items()},
               "rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}
    save_tensors(run_dir / LAST_CHECKPOINT, tensors,
                 {"progress": asdict(progress), "param_groups": param_groups})


def load_checkpoint(run_dir: Path, flow, optimizer, ema: EMA, generator, steps: int | None = None) -> Progress:
    """Restore a run's last checkpoint into the given objects; with ``steps`` (the run's new length),
    warn when the run has already taken that many steps, so nothing is left to continue."""
    path = run_dir / LAST_CHECKPOINT
    check_weights_file_size(path, flow.state_dict())
    tensors, meta = load_tensors(path)
    load_weights(flow, split_prefix(tensors, "model."), path)
    try:
        optimizer_from_tensors(optimizer, split_prefix(tensors, "optim."), meta["param_groups"])
        ema.load_state_dict(split_prefix(tensors, "ema."))
        torch.set_rng_state(tensors["rng.torch"])
        progress = Progress(**meta["progress"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FlowforgeError(f"{path}: does not match this run ({detail[:200]})") from None
    try:
        generator.set_state(tensors["rng.generator"])
    except (KeyError, RuntimeError):  # saved by a generator of another device type: batches reseeded
        warn(f"{path}: the batch generator's state was saved on another kind of device; the batches "
             "continue from a fresh seed (the run is not bit-identical to an uninterrupted one)")
        generator.manual_seed(int(generator.initial_seed()) + progress.step)
    if steps is not None and progress.step >= steps:
        warn(f"{run_dir} has already taken {progress.step} steps of the {steps} asked: nothing to continue; "
             "give a larger --steps to go on")
    return progress


def prepare_run_dir(run_dir: Path, config: TrainConfig, dim, columns: list[str] | None, force: bool,
                     context: dict | None = None, digest: str | None = None) -> None:
    """Start the run's files (the caller holds the lock and has checked the directory): on ``force``
    the previous run's own files go first, and nothing else in the directory is touched. ``digest``:
    the SHA-256 of the user's data file, so that its later edits are noticed."""
    if force:
        clear_run(run_dir)
    write_json(run_dir / CONFIG, {MARKER: {"format": 1}, "config_version": CONFIG_VERSION, "train": config.to_dict(),
                                  "dim": dim, "columns": columns, "context": context,
                                  **({} if digest is None else {"data_sha256": digest}),
                                  "versions": versions()})  # first: now it is a run
    record_files(run_dir, [run_dir / name for name in RUN_FILES])
    atomic_write_bytes(run_dir / METRICS, b"")


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def reopen_run_files(run_dir: Path, config: TrainConfig, step: int) -> None:
    """On resume from ``step``: config.json records the run's new length (the schedule stretches to
    it; a fit's evaluation interval follows it) when there is more to do, the results of the run as
    it was go until this one ends (a resume stopped part-way leaves none to pass for its own), and
    metrics written after the checkpoint are dropped."""
    kept = metrics_through(run_dir, step)  # read first: a damaged file refuses the resume before anything changes
    raw = read_json(run_dir / CONFIG)
    length = {"steps": config.steps, "eval_every": config.eval_every}
    if config.steps > step and any(raw["train"].get(k) != v for k, v in length.items()):
        write_json(run_dir / CONFIG, {**raw, "train": {**raw["train"], **length}})
    (run_dir / RESULTS).unlink(missing_ok=True)
    # whole, write-then-rename: a link put in metrics.jsonl's place is replaced, not written through
    atomic_write_bytes(run_dir / METRICS, "".join(json.dumps(record) + "\n" for record in kept).encode())


def metrics_through(run_dir: Path, step: int) -> list[dict[str, Any]]:
    """The run's metrics records up to ``step``, the checkpoint's: those written after it (a crash can
    leave some, and half a line) are forgotten on resume."""
    path = run_dir / METRICS
    if not path.is_file():
        warn(f"{path}: missing or not a file; the training curve starts again at step {step:,}")
        return []
    return [record for record in read_metrics(path) if record["step"] <= step]


class _Objective(torch.nn.Module):
    """The loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, flow, objective: str, l2: float = 0.0):
        super().__init__()
        self.flow, self.objective, self.l2 = flow, objective, l2

    def forward(self, batch: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        loss = training_loss(self.flow, batch, self.objective, context)
        return loss + l2_penalty(self.flow, self.l2) if self.l2 else loss


def _build(config: TrainConfig, splits, max_params: int | None,
           device: torch.device, dtype: torch.dtype) -> tuple[Any, torch.optim.Optimizer, torch.Generator]:
    """The flow (standardisation statistics set), its optimiser and the batch generator."""
    check_flow_size(config, splits.dim, max_params)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    flow = build_flow(config, splits.dim).to(dtype=dtype)  # a float64 run's statistics in float64
    if config.standardize:
        try:
            fit_standardization(flow, torch.from_numpy(splits.train).to(dtype))
        except ValueError as err:
            raise FlowforgeError(f"{config.data}: {err}") from None
        if not math.isfinite(standardization_log_scale(flow)):
            raise FlowforgeError(f"{config.data}: the spread of the values overflows "
                                 f"{config.dtype} arithmetic; rescale the data")
    if splits.context_info is not None:
        _fit_context_standardization(flow, splits, config.data)
    flow = flow.to(device=device, dtype=dtype)
    return flow, make_optimizer(flow.parameters(), config.lr, config.weight_decay), \
        torch.Generator(device).manual_seed(config.seed)


def _fit_context_standardization(flow, splits, source: str) -> None:
    """A table's context columns standardised inside the flow (its ``context_embedding``), so the
    networks see unit-scale conditions; a constant one is refused by name."""
    if flow.context_embedding is None:
        return
    c_train = torch.from_numpy(splits.context[0]).double()
    constant = (c_train == c_train[0]).all(0).tolist()
    for name, value, flat in zip(splits.context_info.names, c_train[0].tolist(), constant):
        if flat:
            raise FlowforgeError(f"{source}: column {name!r} is constant ({value:g}); a constant condition tells "
                                 "the flow nothing; drop it")
    flow.context_embedding.set_statistics(c_train.mean(0), c_train.std(0, unbiased=False))


def _jitter_scale(config: TrainConfig, x_train: torch.Tensor, flow: torch.nn.Module) -> torch.Tensor | None:
    """The scale of the noise added to training batches: a per-feature std (D,), or for a flow that
    whitens its input a (D, D) factor A, the noise being A ε (None for none).

    Noise regularisation: each training point becomes a small Gaussian blob, so the flow cannot
    collapse its mass onto the points it has seen. It also blurs what is learned: a Gaussian
    direction of width σ widens to √(σ² + σ_noise²), which costs about ¼ (σ_noise / σ)⁴ nats.
    Behind a :class:`Whiten` the noise is shaped like the data (A = noise · diag(std) L): the
    thin directions of near-collinear columns, which the layer stretches to unit width, would
    otherwise be swamped (breast cancer, 30 columns: 10.63 nats with per-feature noise, 6.44 shaped).
    """
    if not config.train_noise:
        return None
    whiten = next((m for m in flow.modules() if isinstance(m, Whiten)), None)
    if whiten is not None:
        return config.train_noise * whiten.std[:, None] * whiten.cholesky
    return config.train_noise * x_train.std(dim=0)  # vector data only: TrainConfig.validate refuses images


def make_optimizer(parameters, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW with the fused kernel: one pass over all parameters per step (measured 1.2× faster
    steps than the default multi-tensor Adam on the book's model)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, force: bool = False,
          progress_bar: bool = True, stop_after: int | None = None,
          max_params: int | None = None) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` (or continue it with ``resume``); returns the results.

    Under torchrun the processes share the work (see :mod:`flowforge.training.distributed`).
    ``stop_after`` ends the run early at that step, as an interruption would (the schedule
    still plans for ``config.steps``, so a later ``resume`` continues exactly): the results of the
    best weights so far are returned, and no results.json is written until the run ends. The writing
    process holds the run directory's lock throughout (see :mod:`flowforge.training.rundir`);
    a model above ``max_params`` parameters is refused before it is built.

    Seeding, one scheme for fresh and resumed runs: the initial weights come from ``seed`` (the
    same on every rank); batches and training noise from a generator seeded with ``seed`` (the
    same on every rank, so each takes its shard of one global batch); other randomness (trace
    estimators, dequantisation noise) from the global generator seeded ``seed + rank``. A
    checkpoint holds rank 0's generator states; on resume the other ranks reseed theirs with
    ``seed + 1_000_003·rank + step``. The caller's global RNG state is restored on return.
    """
    config.validate()
    run_dir = Path(run_dir)
    check_path_encoding(run_dir)
    ranks = distributed.setup(config.device)
    if ranks.active and ":" in config.device:
        raise FlowforgeError(f"--device {config.device}: under torchrun each process takes the GPU of its "
                             "local rank; give --device cuda or auto")
    device = resolve_device(config.device)
    try:
        claim = claim_run_dir(run_dir, resume=resume, force=force) if ranks.is_main else nullcontext()
        with claim, forked_rng(device), denormals_flushed():
            return _train(config, run_dir, ranks, resume, force, progress_bar, stop_after, max_params)
    finally:
        distributed.teardown(ranks)


def data_info(source: str, splits) -> DataInfo:
    """What a recipe sees of the data: its kind, training rows and sample shape."""
    kind = "image" if len(splits.shape) == 3 else "toy" if is_toy(source) else "table"
    return DataInfo(kind, len(splits.train), tuple(splits.shape), pixel_bits(splits.train) if kind == "image" else None,
                    splits.context_info.dim if splits.context_info else 0)


def pixel_bits(images) -> int:
    """The bit depth of 8-bit-scale pixel values: 8 − log2 of their common step (digits' 16 levels
    are stored as 16·v, so 4 bits; MNIST's 256 levels, 8 bits).

    >>> from flowforge.training.loop import pixel_bits
    >>> import numpy as np
    >>> pixel_bits(np.array([0, 16, 240])), pixel_bits(np.array([0, 3, 255]))
    (4, 8)
    """
    import numpy as np

    step = int(np.gcd.reduce(np.asarray(images).astype(np.int64).ravel()))
    if step <= 0 or step & (step - 1):  # all zero, or not a power of two
        return 8
    return max(1, 8 - (step.bit_length() - 1))


def _recorded_config(run_dir: Path, asked: TrainConfig) -> tuple[TrainConfig, Any]:
    """The run's own config (``asked``'s steps and device over it) and the data shape it records."""
    raw = read_json(run_dir / CONFIG)
    recorded = TrainConfig.from_dict(raw.get("train", {}), source=str(run_dir / CONFIG),
                                     version=raw.get("config_version", 1))
    recorded.steps = asked.steps if asked.steps is not None else recorded.steps
    recorded.device = asked.device
    return recorded, raw.get("dim")


def check_input_kind(config: TrainConfig, splits) -> None:
    """Refuse vectors for an image model before its recipe, which reads an image shape, is looked
    up (images for a vector model are refused by :meth:`ModelSpec.build` when the flow is sized)."""
    if spec_of(config.model).images and len(splits.shape) != 3:
        raise FlowforgeError(f"{config.model} models images of shape (C, H, W); {config.data} is vector data "
                             f"of {splits.shape[0]} features")


def train_step(objective, optimizer, parameters: list, batch: torch.Tensor,
               grad_clip: float | None, context: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
    """One optimisation step on ``batch`` (``objective(batch)`` is the loss, ``objective(batch,
    context)`` with a context; gradients clipped at ``grad_clip`` unless None): the loss, detached
    on the device, and whether the step was taken (not for a non-finite loss or gradient; that
    check is the step's one host sync).

    The benchmarks time this function for every contender."""
    loss = objective(batch) if context is None else objective(batch, context)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # DDP averages the gradients over ranks here
    finite = torch.isfinite(loss)
    if grad_clip is not None:
        finite = finite & torch.isfinite(torch.nn.utils.clip_grad_norm_(parameters, grad_clip))
    finite = bool(finite)
    if finite:
        optimizer.step()
    return loss.detach(), finite


def draw_batch(x_train: torch.Tensor, batch_size: int, generator: torch.Generator, jitter: torch.Tensor | None,
               c_train: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A minibatch drawn with replacement, plus the training noise (both from ``generator``: the
    same on every rank, restored on resume), and the same rows' conditions (None without)."""
    rows = torch.randint(len(x_train), (batch_size,), generator=generator, device=x_train.device)
    batch = x_train[rows]
    if jitter is not None:
        noise = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
        batch = batch + (noise @ jitter.T if jitter.dim() == 2 else jitter * noise)
    return batch, None if c_train is None else c_train[rows]


def _checked_setup(config: TrainConfig, run_dir: Path, ranks: distributed.Context, resume: bool
                   ) -> tuple[TrainConfig, Any]:
    """The run's config and data splits, checked against each other (and against the recorded run
    when resuming) before anything is built."""
    # a resumed run continues its own recorded config (only the caller's steps and device may
    # differ), so it stays the model it was; a new run takes the recipe for its data
    config, recorded_dim = _recorded_config(run_dir, config) if resume else (config, None)
    if resume:
        refuse_changed_data(run_dir)
    splits = load_splits(config.data, config.seed, config.n_train, data_dir=config.data_dir,
                         context=config.conditions_on, dtype=np.dtype(config.dtype))
    if resume and recorded_dim != (list(splits.dim) if isinstance(splits.dim, tuple) else splits.dim):
        raise FlowforgeError(f"{run_dir / CONFIG}: records data of shape {recorded_dim}, but {config.data} "
                             f"has {splits.dim}; cannot resume")
    batch_given = config.batch_size is not None  # before the recipe fills it in
    if not resume:
        check_input_kind(config, splits)
        info = data_info(config.data, splits)  # once: an image set's pixel depth scans every pixel
        config = config.resolved(info)
    config = config.validate()
    if not resume:
        _refuse_idle_options(config)
    if ranks.is_main and not resume:
        _check_columns(config, splits)
        _check_sizes(config, splits, batch_given, info.bits)
    if config.batch_size % ranks.world_size:
        raise FlowforgeError(f"--batch-size {config.batch_size} must divide among {ranks.world_size} processes")
    _check_context_size(config, splits)
    return config, splits


def refuse_changed_data(run_dir: Path) -> None:
    """A resumed run goes on only with the data it began with: the same seed would split a changed
    file's rows anew, mixing test rows into training and scoring the run on others."""
    changed = changed_data(read_json(run_dir / CONFIG))
    if changed is not None:
        raise FlowforgeError(f"{changed}: changed (or gone) since {run_dir} was trained on it; a resumed run would "
                             "split other rows, so start a new run with --out")


def _start_or_resume(config: TrainConfig, run_dir: Path, ranks: distributed.Context, splits, resume: bool,
                     force: bool, flow, optimizer, ema: EMA, generator, digest: str | None = None) -> Progress:
    """A resumed run's state from its checkpoint, or a new run's directory and a fresh start."""
    if resume:
        progress = load_checkpoint(run_dir, flow, optimizer, ema, generator, config.steps)  # rank 0's RNG too
        if progress.best_step >= 0:  # the best weights are read back at the end: a corrupt file is said now
            load_tensors(run_dir / BEST_WEIGHTS)
        if ranks.is_main:
            reopen_run_files(run_dir, config, progress.step)
        elif ranks.active:
            torch.manual_seed(config.seed + 1_000_003 * ranks.rank + progress.step)
        return progress
    if ranks.is_main:
        prepare_run_dir(run_dir, config, splits.dim, splits.columns, force,
                        splits.context_info.to_dict() if splits.context_info else None, digest)
    torch.manual_seed(config.seed + ranks.rank)  # per-rank noise (e.g. trace estimators)
    return Progress()


def _parallel_objective(flow, config: TrainConfig, ranks: distributed.Context, device: torch.device):
    """The training objective as a module, wrapped for data parallelism when several ranks run."""
    objective = _Objective(flow, config.objective, config.l2)
    if ranks.active:  # on GPUs each rank holds its own (torch.cuda.set_device in distributed.setup)
        ids = [distributed.local_rank()] if device.type == "cuda" else None
        objective = torch.nn.parallel.DistributedDataParallel(objective, device_ids=ids)
    return objective


def _stops_early(config: TrainConfig, progress: Progress, write: Callable[[str], Any]) -> bool:
    """Whether ``config.patience`` evaluations without a better validation NLL have passed (said)."""
    if not config.patience or progress.stale_evals < config.patience:
        return False
    write(f"stopped early at step {progress.step}: no better validation NLL in "
          f"{config.patience} evaluations (best {progress.best_val:.4f} at step {progress.best_step})")
    return True


def _train(config: TrainConfig, run_dir: Path, ranks: distributed.Context, resume: bool, force: bool,
           progress_bar: bool, stop_after: int | None, max_params: int | None) -> dict[str, Any]:
    digest = None if resume else data_digest(config.data, config.data_dir)  # before the rows are read
    config, splits = _checked_setup(config, run_dir, ranks, resume)
    device, dtype = resolve_device(config.device), resolve_dtype(config.dtype)
    metrics = spec_of(config.model).metrics
    flow, optimizer, generator = _build(config, splits, max_params, device, dtype)
    ema = EMA(flow, config.ema_decay)
    progress = _start_or_resume(config, run_dir, ranks, splits, resume, force, flow, optimizer, ema, generator,
                                digest)
    ranks.barrier()
    objective = _parallel_objective(flow, config, ranks, device)
    x_train = torch.from_numpy(splits.train).to(device, dtype)
    c_train = None if splits.context is None else torch.from_numpy(splits.context[0]).to(device, dtype)
    jitter = _jitter_scale(config, x_train, flow)
    offset = -standardization_log_scale(flow) if config.objective == "mle" else 0.0  # → standardised NLL
    train_key = "train_nll" if config.objective == "mle" else "train_loss"
    good = snapshot_state(flow, optimizer, ema, generator, progress)
    bar = tqdm(total=config.steps, initial=progress.step, desc="train", unit="step",
               disable=None if progress_bar and ranks.is_main else True,  # None: off when stderr is no terminal (a log)
               dynamic_ncols=True)
    started = time.perf_counter() - progress.elapsed
    running, taken = torch.zeros((), device=device, dtype=torch.float64), 0  # summed on the device

    last_step = config.steps if stop_after is None else min(stop_after, config.steps)
    stopped_early = False
    parameters = list(flow.parameters())  # listed once: the module tree is not walked every step
    while progress.step < last_step:
        lr = learning_rate(config, progress.step) * progress.lr_scale
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch, conditions = draw_batch(x_train, config.batch_size, generator, jitter, c_train)
        loss, finite = train_step(objective, optimizer, parameters, ranks.shard(batch), config.grad_clip,
                                  None if conditions is None else ranks.shard(conditions))
        loss = ranks.mean(loss)  # the same value on every rank, so every rank decides alike
        if finite:
            ema.update(progress.step)
            running, taken = running + loss, taken + 1
        else:
            progress, rolled_back = _after_nonfinite(config, run_dir, progress, float(loss), good,
                                                     (flow, optimizer, ema, generator), bar.write)
            if rolled_back:
                continue
        progress.step += 1
        bar.update(1)

        if progress.step % config.eval_every == 0 or progress.step == last_step:
            train_value = float(running) / max(1, taken) + offset
            running, taken = torch.zeros_like(running), 0
            record = _evaluate_and_save(run_dir, ranks, flow, optimizer, ema, generator, progress, held_out(splits, 1),
                                        {"step": progress.step, train_key: train_value, "lr": lr}, started, metrics)
            good = snapshot_state(flow, optimizer, ema, generator, progress)
            bar.set_postfix(train=f"{record[train_key]:.3f}", val=f"{record['val_nll']:.3f}",
                            best=f"{progress.best_val:.3f}")
            if _stops_early(config, progress, bar.write):
                stopped_early = True
                break
    bar.close()
    ranks.barrier()  # rank 0's best weights are on disk before anyone reads them
    # A stop_after stop is part-way, as an interruption: its results are returned, not written as the run's
    finished = stopped_early or progress.step >= config.steps
    return finish(run_dir, flow, splits, progress, metrics, write=ranks.is_main and finished)


def held_out(splits, part: int) -> tuple[Any, Any]:
    """(points, conditions or None) of the validation (``part`` 1) or test (2) split."""
    points = (splits.train, splits.val, splits.test)[part]
    return points, None if splits.context is None else splits.context[part]


def _refuse_idle_options(config: TrainConfig) -> None:
    """A new run's model options that its objective never uses: recorded, they would claim a
    training that did not happen (FFJORD's penalties under flow matching)."""
    idle = spec_of(config.model).idle_options(config.objective, config.model_options)
    if idle:
        given = ", ".join(f"{name}={config.model_options[name]}" for name in idle)
        needed = " or ".join(sorted(set(idle.values())))
        raise FlowforgeError(f"--model-option {given}: {config.model} uses {'it' if len(idle) == 1 else 'them'} only "
                             f"when it trains by {needed}, and this run trains by {config.objective} "
                             f"(add --objective {needed})")


def _check_context_size(config: TrainConfig, splits) -> None:
    """The model's context size is the data's (set by --context or --context-columns, not an option)."""
    given = config.model_options.get("context_dim") or 0
    carried = splits.context_info.dim if splits.context_info else 0
    if given != carried:
        raise FlowforgeError(f"--model-option context_dim={given} but the data carry "
                             f"{'no context' if not carried else f'a context of {carried}'}; the context comes "
                             "from the data: give --context label or --context-columns")


def _evaluate_and_save(run_dir: Path, ranks, flow, optimizer, ema: EMA, generator, progress: Progress,
                       val: tuple[Any, Any], record: dict[str, Any], started: float,
                       metrics: tuple[str, ...]) -> dict[str, Any]:
    """Validate the averaged weights on ``val`` (points, conditions), keep them if they are the best
    so far, log, checkpoint."""
    with ema.applied():  # evaluate, and keep, the averaged weights
        val = nll_summary(flow, val[0], metrics, report=False, context=val[1])["nll"]
        improved = math.isfinite(val) and val < progress.best_val
        best_state = {k: v.clone() for k, v in flow.state_dict().items()} if improved else None
    progress.elapsed = time.perf_counter() - started
    record = {**record, "val_nll": val, "time": round(progress.elapsed, 3),
              **flow.training_metrics()}  # e.g. a continuous flow's NFE
    if improved:
        progress.best_val, progress.best_step, progress.stale_evals = val, progress.step, 0
    else:
        progress.stale_evals += 1
    if ranks.is_main:
        # Metrics first, checkpoint last: a crash in between is undone by resume.
        append_metrics(run_dir, record)
        if improved:
            save_tensors(run_dir / BEST_WEIGHTS, best_state, {"step": progress.step, "val_nll": val})
        save_checkpoint(run_dir, flow, optimizer, ema, generator, progress)
    return record


def _check_sizes(config: TrainConfig, splits, batch_given: bool, depth: int | None = None) -> None:
    """Warn of a table too small to score (a handful of test rows), of images scored at fewer bits
    than their pixels hold (``depth``, the data's), and of a batch, given on the command line, larger
    than the training rows (drawn with replacement: each step repeats every row, at that many times
    the cost)."""
    rows, what = len(splits.train), "images" if len(splits.shape) > 1 else "rows"
    if not is_toy(config.data) and len(splits.test) < 5:
        warn(f"{config.data}: {rows + len(splits.val) + len(splits.test)} {what} leave {len(splits.val)} for "
             f"validation and {len(splits.test)} for test: early stopping and the test NLL rest on too few "
             f"points to mean much (give at least 50 {what})")
    bits = config.model_options.get("bits")
    if depth is not None and isinstance(bits, int) and bits < depth:
        warn(f"{config.data} has {depth}-bit pixels and the model scores them at bits={bits}: the finer levels are "
             f"dropped, so its bits/dim are not comparable with a {depth}-bit model's (a uniform model scores "
             f"{depth} bits/dim on this data, {bits} at bits={bits})")
    if batch_given and config.batch_size > rows:
        warn(f"--batch-size {config.batch_size} is more than the {rows} training rows: batches are drawn with "
             f"replacement, so each step repeats every row about {config.batch_size / rows:.0f} times at as many "
             "times the cost and learns little more (leave it out for the recipe's)")


def _check_columns(config: TrainConfig, splits) -> None:
    """Refuse a constant column of a user's table, and a header that does not name each column once
    (its names would be dropped, or a later file could not be matched to the run by name); warn of
    an integer-valued column, by name. For new runs only: a run trained before these checks loads."""
    if splits.columns is None or is_toy(config.data):
        return
    info = splits.context_info
    names = list(splits.columns) + (info.names if info is not None and info.kind == "columns" else [])
    mismatch = header_problem(config.data, len(names))
    if mismatch:
        raise FlowforgeError(mismatch)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FlowforgeError(f"{config.data}: its header names {', '.join(map(repr, repeated))} more than once; give "
                             "each column its own name")
    problems = column_problems(splits.train, splits.columns, config.data)
    for fatal, message in problems:
        if fatal:
            raise FlowforgeError(message)
    for _, message in problems:
        warn(message)


def _after_nonfinite(config: TrainConfig, run_dir: Path, progress: Progress, loss: float, good: dict,
                     state: tuple, say) -> tuple[Progress, bool]:
    """The NaN policy for a non-finite step: stop (``on_nan="stop"``, or after
    :data:`MAX_NAN_EVENTS`), roll back to the last good state with half the learning rate, or
    skip the step. Returns the progress and whether it rolled back."""
    if config.on_nan == "stop" or progress.nan_events >= MAX_NAN_EVENTS:
        raise FlowforgeError(diverged_message(run_dir, progress.step + 1, loss))
    if config.on_nan == "rollback":
        events = progress.nan_events + 1
        progress = restore_state(good, *state)
        progress.nan_events, progress.lr_scale = events, progress.lr_scale * 0.5
        say(f"non-finite loss at step {progress.step + 1}: rolled back, learning rate halved")
        return progress, True
    progress.nan_events += 1
    say(f"non-finite loss at step {progress.step + 1}: step skipped")
    return progress, False


def diverged_message(run_dir: Path, step: int, loss: float) -> str:
    """The message for a run that stopped on a non-finite loss: it names a checkpoint only if one exists."""
    saved = (f"the last good checkpoint is in {run_dir}" if (run_dir / LAST_CHECKPOINT).is_file()
             else "no checkpoint was written (it diverged before the first evaluation)")
    return f"training diverged at step {step} (loss {loss}); {saved}; try a lower --lr"


def finish(run_dir: Path, flow, splits, progress: Progress, metrics: tuple[str, ...],
           write: bool = True) -> dict[str, Any]:
    """Evaluate the best weights on the held-out test split and write results.json. Vector runs
    also report a full-covariance Gaussian's test NLL (fitted to the training rows), and warn
    when the flow does not beat it."""
    if progress.best_step < 0:
        raise FlowforgeError("no finite validation NLL was reached; nothing to save")
    tensors, _ = load_tensors(run_dir / BEST_WEIGHTS)
    flow.load_state_dict(tensors)
    flow.eval()
    points, conditions = held_out(splits, 2)
    test = nll_summary(flow, points, metrics, context=conditions)  # the spec's metrics (bits/dim, nfe) beside the NLL
    results = {"test_nll": test["nll"], "test_nll_data": test["nll_data"], "test_nll_stderr": test["nll_stderr"],
               "best_val_nll": progress.best_val, "best_step": progress.best_step, "steps": progress.step,
               "train_seconds": round(progress.elapsed, 2), "nan_events": progress.nan_events,
               "conditional": conditions is not None}
    results.update({f"test_{key}": test[key] for key in ("bits_per_dim", "nfe") if key in test})
    if len(splits.shape) == 1:
        c_train = None if splits.context is None else splits.context[0]
        gaussian = gaussian_baseline_nll(splits.train, points, c_train, conditions) - standardization_log_scale(flow)
        results["test_gaussian_nll"] = gaussian
        if write and not test["nll"] < gaussian:
            linear = ", its mean linear in the context," if conditions is not None else ""
            warn(f"the flow's test NLL {test['nll']:.4f} does not beat a full-covariance Gaussian{linear} fitted to "
                 f"the same rows ({gaussian:.4f}): it learned no more than a mean and a covariance")
    if write:
        write_json(run_dir / RESULTS, results)
    return results
