"""Fit a flow q to an unnormalised target p̃ by stochastic optimisation of a variational objective.

    θ* = argmin_θ L(θ),   L = −ELBO (reverse KL, or its sticking-the-landing gradient) or the
    self-normalised forward KL (see :mod:`flowforge.variational.objectives`)

The trainer's pieces serve here unchanged: the warm-up and cosine schedule, the clipped and
NaN-checked step, the weight average (EMA), the NaN policy (roll back and halve the learning
rate, skip, or stop) and the run directory with its checkpoint, lock and resume. The averaged
weights with the best ELBO (on the same fixed evaluation draws every time) are kept.

Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", arXiv:1505.05770.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from flowforge.errors import FlowforgeError, warn
from flowforge.training.checkpoint import (BEST_WEIGHTS, CONFIG, LAST_CHECKPOINT, RESULTS, load_tensors, read_json,
                                          save_tensors, write_json)
from flowforge.training.config import TrainConfig
from flowforge.training.device import flow_device
from flowforge.training.ema import EMA
from flowforge.training.loop import (MAX_NAN_EVENTS, Progress, append_metrics, cosine_decay, diverged_message,
                                     load_checkpoint, make_optimizer, prepare_run_dir, reopen_run_files,
                                     restore_state, save_checkpoint, snapshot_state, train_step)
from flowforge.training.progress import tqdm
from flowforge.training.rundir import claim_run_dir
from flowforge.variational.diagnostics import EVAL_DRAWS, diagnose, warn_if_unreliable
from flowforge.variational.objectives import OBJECTIVES, objective_function
from flowforge.variational.placement import target_placement
from flowforge.variational.targets import Target, checked_log_prob, target_file_digest, target_name

SECTION = "variational"  # config.json's key for what a variational run fitted, and how
TRAINING_EVAL_DRAWS = 4096  # draws behind each evaluation during a fit (the final one takes EVAL_DRAWS)
RECIPE = {"steps": 2000, "batch_size": 256, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.0,
          "ema_decay": 0.99, "eval_every": 200, "patience": 0, "train_noise": 0.0}
MODEL_RECIPES = {"nsf": {"num_layers": 4, "hidden": 64, "depth": 2, "bins": 8},
                 # a coupling may stretch by e³, not the book's e: ring mixture, 45 s, ELBO / ESS at seeds 1 and 2
                 # 1.51 / 0.55 and 1.72 / 0.84 (bound 1: 1.24 / 0.39, 1.41 / 0.60); docs/variational.md
                 "realnvp": {"num_layers": 8, "hidden": 64, "depth": 2, "scale_bound": 3.0},
                 "maf": {"num_layers": 5, "hidden": 64, "depth": 2, "scale_bound": 1.0}}  # as before MAF's bound 3


def fit_config(model: str = "nsf", target: str = "gmm", **overrides: Any) -> TrainConfig:
    """The variational recipe as a :class:`TrainConfig` (``batch_size`` is the draws per step);
    ``overrides`` replace fields, ``model_options`` is merged into the model's own. Every builder
    option is recorded, so a run rebuilds the same flow whatever the builder's defaults become."""
    from flowforge.models.specs import SPECS

    recorded = SPECS[model].builder_options() if model in SPECS else {}
    options = {**recorded, **MODEL_RECIPES.get(model, {}), **overrides.pop("model_options", {})}
    values = {**RECIPE, "objective": None, "standardize": True, "recipe": f"{model}/variational",
              **{k: v for k, v in overrides.items() if v is not None}}
    if overrides.get("eval_every") is None:
        values["eval_every"] = evaluation_interval(values["steps"])
    return TrainConfig(model=model, data=target, model_options=options, **values)


def evaluation_interval(steps: int) -> int:
    """The recipe's steps between evaluations for a run of ``steps``: every 200, or ten times in a
    shorter run (its curves and its choice of the best weights)."""
    return max(1, min(RECIPE["eval_every"], steps // 10))


def set_target_scale(flow, scale: float | torch.Tensor, loc: float | torch.Tensor = 0.0) -> None:
    """Make the flow's fixed first layer (Standardize) take ``loc`` off and divide by the target's
    ``scale`` (numbers, or one per coordinate), so the layers after it work at unit scale whatever
    the target's units and wherever it sits."""
    from flowforge.transforms import Standardize

    layers = [layer for layer in flow.modules() if isinstance(layer, Standardize)]
    if not layers:
        raise ValueError("the flow has no Standardize layer to place it by; build it with standardize=True")
    for layer in layers:
        like = {"dtype": layer.mean.dtype, "device": layer.mean.device}
        layer.set_statistics(torch.zeros_like(layer.mean) + torch.as_tensor(loc, **like),
                             torch.zeros_like(layer.std) + torch.as_tensor(scale, **like))


def place_on_target(flow, target: Callable, seed: int = 0, on_lost: Callable[[str], None] = warn):
    """Before a first step, as ``flowforge fit`` does: set the fixed first layer of a flow not yet
    placed (its Standardize layers at mean 0, std 1) to where ``target`` keeps its mass — a built-in
    target's own scale, else :func:`target_placement`'s search. Returns the search's (location,
    scale) when it moved the flow, else None. A flow without a Standardize layer cannot be placed:
    it is warned of (``on_lost``) when the target lies beyond the unit scale it starts at."""
    from flowforge.transforms import Standardize

    layers = [layer for layer in flow.modules() if isinstance(layer, Standardize)]
    if not all(layer.at_unit_scale() for layer in layers):
        return None  # placed already: by the caller, or by an earlier fit of this flow
    known = isinstance(target, Target) and target.scale is not None  # a built-in's scale; else searched
    dim, (device, dtype) = int(flow.base.event_shape[-1]), flow_device(flow)
    origin = torch.zeros(dim, dtype=torch.float64)
    placement = (origin, origin + torch.as_tensor(target.scale, dtype=torch.float64)) if known else \
        target_placement(target, dim, seed, on_lost=on_lost, dtype=dtype, device=device)
    if placement is None or (known and bool((placement[1] == 1).all())):
        return None
    if not layers:
        on_lost(f"target {target_name(target)} lies beyond the unit scale the flow starts at (its mass centred "
                f"{float(placement[0].abs().max()):.3g} from the origin, spread up to {float(placement[1].max()):.3g}): "
                "build the flow with standardize=True, and fit() places it there")
        return None
    set_target_scale(flow, placement[1], placement[0])
    return None if known else placement


def fit(flow, target: Callable, steps: int = 2000, *, objective: str = "forward-then-jeffreys", draws: int = 256,
        lr: float = 3e-3, warmup_steps: int = 100, grad_clip: float = 10.0, ema_decay: float = 0.99,
        eval_every: int | None = None, seed: int = 0, on_nan: str = "rollback", context_sampler: Callable | None = None,
        progress_bar: bool = False, seconds: float | None = None, place: bool = True) -> dict[str, Any]:
    """Fit ``flow`` (in place) to ``target``, a callable log p̃(x) → (batch,) (or log p̃(x, c) with a
    ``context_sampler(n, generator) -> (n, C)`` for an amortised q(x | c)); returns the final
    diagnostics (see :func:`flowforge.variational.diagnostics.diagnose`) and the history, evaluated
    every ``eval_every`` steps (default: every 200, or ten times in a shorter run).

    With ``place`` (the default) a flow built with ``standardize=True`` and not yet placed starts
    where the target keeps its mass (:func:`place_on_target`; not for an amortised fit): a flow
    at the unit scale misses a target far from it or wider than a spline's ±4.

    With ``seconds`` the run ends after that much wall-clock (evaluations included) or ``steps``
    steps, whichever comes first; the learning-rate schedule and the objective's phases follow
    whichever is further along. For importance sampling an affine flow may take a heavy-tailed
    base first (:func:`student_t_base`). ``target`` must be written in torch operations (the
    reverse KL differentiates it) and finite everywhere.

    >>> from flowforge.variational import fit
    >>> from flowforge.models import RealNVP
    >>> from flowforge.variational.targets import banana
    >>> flow = RealNVP(2, num_layers=2, hidden=8, depth=1, standardize=True)   # placed on the target first
    >>> out = fit(flow, banana(), steps=20, eval_every=10)
    >>> len(out["history"]), out["elbo"] <= banana().log_z + 0.1
    (2, True)
    """
    if objective not in OBJECTIVES:
        raise FlowforgeError(f"objective {objective!r}: choose from {', '.join(OBJECTIVES)}")
    if seconds is not None and not seconds > 0:
        raise FlowforgeError(f"seconds={seconds!r}: a time budget must be positive")
    if steps < 1 or draws < 2:  # as `flowforge fit` --steps and --draws
        raise FlowforgeError(f"steps={steps}, draws={draws}: a fit takes at least 1 step of at least 2 draws "
                             "(importance weights need two)")
    config = TrainConfig(model="custom", data=getattr(target, "name", "target"), steps=steps, batch_size=draws,
                         lr=lr, warmup_steps=warmup_steps, grad_clip=grad_clip, ema_decay=ema_decay,
                         eval_every=eval_every or evaluation_interval(steps), seed=seed, on_nan=on_nan,
                         objective=objective)
    check_target(flow, target, objective, seed, context_sampler)
    if place and context_sampler is None:
        place_on_target(flow, target, seed)
    device = next((p.device for p in flow.parameters()), torch.device("cpu"))
    optimizer = make_optimizer(flow.parameters(), lr)
    generator = torch.Generator(device).manual_seed(seed)
    record = _MemoryRecord([])
    progress = _optimise(flow, target, config, optimizer, EMA(flow, ema_decay), generator, Progress(),
                         context_sampler, record, progress_bar, seconds=seconds)
    return {**_final_diagnostics(flow, target, config, context_sampler, record), "history": record.history,
            "best_step": progress.best_step, "steps": progress.step, "seconds": round(progress.elapsed, 2)}


def student_t_base(flow, df: int = 5, components: int = 1):
    """Give ``flow`` (in place, and returned) a base of Student-t coordinates with ``df`` degrees of
    freedom instead of its Gaussian one: q's tails become polynomial, so the importance weights p̃/q
    stay bounded where a Gaussian-based q would thin out. With ``components`` = 1 the base is the
    standard Student-t and the flow's parameters are unchanged; with K > 1 it is an equal-weight
    mixture of K Student-t components with learned locations and scales (2·K·D parameters), so
    separated modes or rings of the target need no thin bridges or seams of q between them
    (:mod:`flowforge.variational.base`). Meant for affine flows (RealNVP, MAF): a spline flow is
    the identity outside its interval, so it passes the Student-t tails on unthinned (on the
    Gaussian mixture an NSF's ELBO fell from 2.16 to −4.08; docs/variational.md)."""
    from flowforge.variational.base import StudentTBase, StudentTMixtureBase

    shape = tuple(flow.base.event_shape)
    device, dtype = flow.base._zero.device, flow.base._zero.dtype
    base = StudentTBase(shape, df) if components == 1 else StudentTMixtureBase(shape, components, df)
    flow.base = base.to(device, dtype)
    return flow


class _MemoryRecord:
    """Where :func:`fit` keeps what a run directory would hold: the history and the best weights."""

    def __init__(self, history: list):
        self.history, self.best = history, None

    def log(self, record: dict) -> None:
        self.history.append(record)

    def keep_best(self, state: dict, meta: dict) -> None:
        self.best = state

    def checkpoint(self, *state) -> None:
        pass

    def best_weights(self) -> dict | None:
        return self.best


class _RunDirRecord(_MemoryRecord):
    """The same, written into a run directory (metrics, best weights, last checkpoint)."""

    def __init__(self, run_dir: Path):
        super().__init__([])
        self.run_dir = run_dir

    def log(self, record: dict) -> None:
        append_metrics(self.run_dir, record)

    def keep_best(self, state: dict, meta: dict) -> None:
        save_tensors(self.run_dir / BEST_WEIGHTS, state, meta)

    def checkpoint(self, *state) -> None:
        save_checkpoint(self.run_dir, *state)

    def best_weights(self) -> dict | None:
        return load_tensors(self.run_dir / BEST_WEIGHTS)[0] if (self.run_dir / BEST_WEIGHTS).is_file() else None


def _step_loss(flow, target, config: TrainConfig, generator, context_sampler, step: int, fraction: float
               ) -> Callable[[Any], torch.Tensor]:
    """The objective as ``train_step`` calls it: the loss of one batch of fresh draws at ``step``,
    ``fraction`` of the run."""
    loss_of = objective_function(config.objective, step, config.steps, fraction)

    def loss(_):
        context = None if context_sampler is None else context_sampler(config.batch_size, generator)
        n = config.batch_size if context is None else 1  # amortised: one draw per sampled context
        return loss_of(flow, target, n, context, generator)
    return loss


def run_fraction(config: TrainConfig, step: int, elapsed: float, seconds: float | None = None) -> float:
    """How far a run is, in [0, 1]: ``step / config.steps``, or with a wall-clock budget of
    ``seconds`` the larger of that and ``elapsed / seconds`` (the schedule then follows the clock)."""
    fraction = step / max(1, config.steps)
    return fraction if seconds is None else max(fraction, elapsed / seconds)


def scheduled_lr(config: TrainConfig, step: int, fraction: float) -> float:
    """The trainer's schedule (linear warm-up over ``warmup_steps``, capped at a tenth of the run,
    then cosine decay to ``lr × min_lr_ratio``) at ``fraction`` of the run."""
    warmup = min(config.warmup_steps, config.steps // 10)
    if step < warmup and fraction < 0.1:
        return config.lr * (step + 1) / warmup
    start = warmup / max(1, config.steps)
    return cosine_decay(config.lr, (fraction - start) / max(1e-9, 1 - start), config.min_lr_ratio)


def _optimise(flow, target, config: TrainConfig, optimizer, ema: EMA, generator, progress: Progress,
              context_sampler, record: _MemoryRecord, progress_bar: bool, where: Path | None = None,
              seconds: float | None = None) -> Progress:
    """Steps until ``config.steps`` (or until ``seconds`` of wall-clock are spent), evaluating and
    checkpointing every ``eval_every`` steps and at the end."""
    parameters = list(flow.parameters())
    good = snapshot_state(flow, optimizer, ema, generator, progress)
    started, running, taken = time.perf_counter() - progress.elapsed, 0.0, 0
    bar = tqdm(total=config.steps, initial=progress.step, desc="fit", unit="step", disable=None if progress_bar else True,
               dynamic_ncols=True)
    fraction = run_fraction(config, progress.step, progress.elapsed, seconds)
    while fraction < 1:
        lr = scheduled_lr(config, progress.step, fraction) * progress.lr_scale
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_fn = _step_loss(flow, target, config, generator, context_sampler, progress.step, fraction)
        try:
            loss, finite = train_step(loss_fn, optimizer, parameters, None, config.grad_clip)
        except FlowforgeError as err:  # the target failed at this step's draws
            raise FlowforgeError(f"step {progress.step + 1}: {err}{_kept(where)}") from None
        if finite:
            ema.update(progress.step)
            running, taken = running + float(loss), taken + 1
        elif config.on_nan == "stop" or progress.nan_events >= MAX_NAN_EVENTS:
            raise FlowforgeError(diverged_message(where or Path("(memory)"), progress.step + 1, float(loss)))
        elif config.on_nan == "rollback":
            events = progress.nan_events + 1
            progress = restore_state(good, flow, optimizer, ema, generator)
            progress.nan_events, progress.lr_scale = events, progress.lr_scale * 0.5
            bar.write(f"non-finite loss at step {progress.step + 1}: rolled back, learning rate halved")
            continue
        else:
            progress.nan_events += 1
        progress.step += 1
        bar.update(1)
        progress.elapsed = time.perf_counter() - started
        fraction = run_fraction(config, progress.step, progress.elapsed, seconds)
        if progress.step % config.eval_every == 0 or fraction >= 1:
            entry = _evaluate(flow, target, config, ema, progress, context_sampler, record,
                              {"step": progress.step, "loss": running / max(1, taken), "lr": lr})
            record.checkpoint(flow, optimizer, ema, generator, progress)
            good, running, taken = snapshot_state(flow, optimizer, ema, generator, progress), 0.0, 0
            bar.set_postfix(elbo=f"{entry['elbo']:.3f}", ess=f"{entry['ess_per_draw']:.2f}")
    bar.close()
    return progress


def _kept(run_dir: Path | None) -> str:
    """What a run stopped by its target keeps, for the end of that one line."""
    if run_dir is None:
        return ""
    if (run_dir / LAST_CHECKPOINT).is_file():
        return f"; {run_dir} keeps its last checkpoint (flowforge fit --resume {run_dir} continues from it)"
    return "; no checkpoint had been written, so the new run is not kept"


def _evaluate(flow, target, config: TrainConfig, ema: EMA, progress: Progress, context_sampler,
              record: _MemoryRecord, entry: dict) -> dict:
    """Diagnose the averaged weights on fixed draws; keep them when their ELBO is the best so far."""
    with ema.applied():
        summary = _diagnostics(flow, target, config, context_sampler, TRAINING_EVAL_DRAWS, config.seed + 1)
        value = -summary["elbo"]
        improved = math.isfinite(value) and value < progress.best_val
        if improved:
            record.keep_best({k: v.clone() for k, v in flow.state_dict().items()},
                             {"step": progress.step, "elbo": summary["elbo"]})
            progress.best_val, progress.best_step = value, progress.step
    entry = {**entry, **{k: summary[k] for k in ("elbo", "log_z", "log_z_stderr", "ess_per_draw", "pareto_k")},
             "time": round(progress.elapsed, 3)}
    record.log(entry)
    return entry


def _diagnostics(flow, target, config: TrainConfig, context_sampler, draws: int, seed: int) -> dict[str, Any]:
    """:func:`diagnose` on draws from a fixed seed (common random numbers across evaluations)."""
    device = next((p.device for p in flow.parameters()), torch.device("cpu"))
    generator = torch.Generator(device).manual_seed(seed)
    context = None if context_sampler is None else context_sampler(16, generator)
    return diagnose(flow, target, draws, generator=generator, context=context)


def _final_diagnostics(flow, target, config: TrainConfig, context_sampler, record: _MemoryRecord | None = None
                       ) -> dict[str, Any]:
    """The best weights (when any were kept) and their diagnostics on :data:`EVAL_DRAWS` fresh draws."""
    best = record.best_weights() if record is not None else None
    if best is not None:
        flow.load_state_dict(best)
    flow.eval()
    summary = _diagnostics(flow, target, config, context_sampler, EVAL_DRAWS, config.seed + 2)
    warn_if_unreliable(summary)
    return summary


def fit_run(config: TrainConfig, run_dir: str | Path, *, dim: int | None = None, resume: bool = False,
            force: bool = False, progress_bar: bool = True, max_params: int | None = None,
            plots: bool = False) -> dict[str, Any]:
    """What ``flowforge fit`` runs: fit ``config.model`` to the target named ``config.data`` (a
    built-in name or ``path.py:function``, of ``dim`` features) into ``run_dir``, or continue it with ``resume``; writes
    config.json (with a ``"variational"`` section), metrics.jsonl, the best and last weights and
    results.json (the final diagnostics), as ``flowforge train`` does. Returns the results, with the
    ``figures`` drawn when ``plots`` (a user's target among them: it is imported now, not by ``plot``)."""
    from flowforge.training.run import build_flow, check_flow_size, check_path_encoding
    from flowforge.training.device import denormals_flushed, resolve_device, resolve_dtype
    from flowforge.variational.targets import load_target

    run_dir = Path(run_dir)
    check_path_encoding(run_dir)
    if config.objective not in OBJECTIVES:
        raise FlowforgeError(f"--objective {config.objective!r}: choose from {', '.join(OBJECTIVES)}")
    with claim_run_dir(run_dir, resume=resume, force=force), denormals_flushed():
        if resume:  # before the file is imported again
            refuse_a_changed_target(read_json(run_dir / CONFIG), run_dir)
        target = load_target(config.data, _recorded_dim(run_dir) if resume else dim)
        if target.dim == 1 and config.model_options.get("autoregressive") is False:  # one feature: nothing to
            config = replace(config, model_options={**config.model_options, "autoregressive": True})  # couple to
        check_flow_size(config, target.dim, max_params)
        torch.manual_seed(config.seed)
        flow = build_flow(config, target.dim)
        lost: list[str] = []  # said once the target has passed its check (a refused one gets one line)
        placement = None if resume else place_on_target(flow, target, config.seed, on_lost=lost.append)
        flow = flow.to(resolve_device(config.device), resolve_dtype(config.dtype))
        optimizer = make_optimizer(flow.parameters(), config.lr, config.weight_decay)
        ema, generator = EMA(flow, config.ema_decay), torch.Generator(resolve_device(config.device))
        generator.manual_seed(config.seed)
        progress = _start(run_dir, config, target, flow, optimizer, ema, generator, resume, force, placement)
        for message in lost:
            warn(message)
        record = _RunDirRecord(run_dir)
        progress = _optimise(flow, target, config, optimizer, ema, generator, progress, None, record, progress_bar,
                             run_dir)
        if progress.best_step < 0:
            raise FlowforgeError("no finite ELBO was reached; nothing to save (try a lower --lr)")
        results = {**_final_diagnostics(flow, target, config, None, record), "target": config.data,
                   "best_step": progress.best_step, "steps": progress.step,
                   "train_seconds": round(progress.elapsed, 2), "nan_events": progress.nan_events}
        write_json(run_dir / RESULTS, results)
    if plots:  # once the run's lock is released: the figures take it again
        from flowforge.variational.figures import plot_variational_run

        try:
            figures = plot_variational_run(run_dir, target)
        except ValueError as err:  # not a builder's refusal (the caller reads a ValueError so): say what failed
            if isinstance(err, FlowforgeError):
                raise
            raise FlowforgeError(f"drawing the figures of {run_dir} failed ({err})") from None
        results = {**results, "figures": [str(path) for path in figures]}
    return results


def _recorded_dim(run_dir: Path) -> int:
    return int(read_json(run_dir / CONFIG)["dim"])


def _start(run_dir: Path, config: TrainConfig, target, flow, optimizer, ema: EMA, generator, resume: bool,
           force: bool, placement: tuple | None = None) -> Progress:
    """A fresh run's files (config.json gains the variational section, with where the flow was
    placed when :func:`target_placement` moved it), or a resumed run's state."""
    if resume:
        progress = load_checkpoint(run_dir, flow, optimizer, ema, generator, config.steps)
        reopen_run_files(run_dir, config, progress.step)
        return progress
    check_target(flow, target, config.objective, config.seed)  # before any file is written
    prepare_run_dir(run_dir, config, target.dim, None, force)
    raw = read_json(run_dir / CONFIG)
    placed = {} if placement is None else {"placement": {"loc": placement[0].tolist(), "scale": placement[1].tolist()}}
    digest = target_file_digest(config.data)
    write_json(run_dir / CONFIG, {**raw, SECTION: {"target": config.data, "objective": config.objective,
                                                   "log_z": target.log_z, **placed,
                                                   **({} if digest is None else {"target_sha256": digest})}})
    torch.manual_seed(config.seed)
    return Progress()


def changed_target(raw: dict) -> str | None:
    """The file of a run's file target when it is no longer the file the run was fitted to (its
    SHA-256 differs, or it is gone); None when it is the same, or the run recorded none."""
    section = variational_section(raw) or {}
    recorded = section.get("target_sha256")
    if recorded is None or target_file_digest(section["target"]) == recorded:
        return None
    return section["target"].rpartition(":")[0]


def refuse_a_changed_target(raw: dict, run_dir: Path) -> None:
    """A resumed fit goes on only against the target it began with: steps against another file
    would mix two targets in one run's weights and curves."""
    changed = changed_target(raw)
    if changed is not None:
        raise FlowforgeError(f"{changed}: changed (or gone) since {run_dir} was fitted to it; a resumed fit would "
                             "mix two targets, so start a new run with --out")


def check_target(flow, target, objective: str, seed: int, context_sampler: Callable | None = None) -> None:
    """Refuse, in one line naming it, a target that raises, returns NaN, ±inf or the wrong shape, or
    (for an objective that differentiates it) no gradient, on 64 draws of the initial flow: before the
    first step, and before a run directory is written. Its own generator, and torch's global ones
    restored after (a user's sampler or target may draw from them): the fit's draws are unchanged."""
    device = next((p.device for p in flow.parameters()), torch.device("cpu"))
    generator = torch.Generator(device).manual_seed(seed)
    if getattr(flow, "context_dim", 0) and context_sampler is None:
        raise FlowforgeError(f"the flow is conditional (context_dim={flow.context_dim}): give fit() a "
                             f"context_sampler(n, generator) returning the (n, {flow.context_dim}) conditions of a step")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        context = None if context_sampler is None else _checked_contexts(context_sampler, 64, generator)
        with torch.no_grad():
            draws = flow.sample(64 if context is None else 1, context=context, generator=generator)
        differentiable = objective != "forward-kl"
        _refuse_another_dimension(target, draws.shape[-1])
        x = draws.reshape(-1, draws.shape[-1]).clone().requires_grad_(differentiable)
        values = checked_log_prob(target, x, context, fitting=True, differentiable=differentiable)
        if differentiable:
            _warn_of_unused_coordinates(target, values, x)
        _warn_of_lost_resolution(target, values)


def _warn_of_lost_resolution(target, values: torch.Tensor) -> None:
    """Warn when the target's float32 values are so large that their steps exceed 0.01 nats while
    they differ among the draws by less than a thousand steps (a large constant offset): the
    importance weights then take a few distinct values, and the tail fit behind Pareto k̂ fails."""
    values = values.detach()
    size = float(values.abs().max())
    step = size * 2.0 ** -24
    if values.dtype == torch.float32 and step > 0.01 and float(values.max() - values.min()) < 1000 * step:
        warn(f"target {target_name(target)} returns values near {size:.3g}, where float32 resolves only steps of "
             f"{step:.2g} nats: the importance weights and Pareto k̂ lose their precision; subtract a constant "
             "from its log-density")


def _warn_of_unused_coordinates(target, values: torch.Tensor, x: torch.Tensor) -> None:
    """Warn when log p̃ does not change with some coordinate at any of the draws: a density flat in
    a direction has no finite normaliser along it (a --dim above what the target reads, most often)."""
    gradient, = torch.autograd.grad(values.sum(), x, allow_unused=True)
    unused = list(range(x.shape[1])) if gradient is None else (gradient == 0).all(0).nonzero().flatten().tolist()
    if unused:
        warn(f"target {target_name(target)} does not change with x[{', '.join(map(str, unused[:8]))}"
             f"{', …' if len(unused) > 8 else ''}] at any of {len(x)} draws; if it is flat along it everywhere, "
             f"it has no finite normaliser (is its dimension {x.shape[1]} right?)")


def _checked_contexts(context_sampler: Callable, n: int, generator: torch.Generator) -> torch.Tensor:
    """``context_sampler(n, generator)``, refused in one line unless an (n, C) floating-point tensor."""
    try:
        context = context_sampler(n, generator)
    except FlowforgeError:
        raise
    except Exception as err:  # noqa: BLE001 - a user's function may raise anything (a signature without generator)
        raise FlowforgeError(f"context_sampler({n}, generator) raised {type(err).__name__}: {str(err)[:200]}; it is "
                             "called with the number of conditions and a torch.Generator") from None
    if not torch.is_tensor(context) or context.dim() != 2 or len(context) != n or not context.is_floating_point():
        got = f"{tuple(context.shape)} {context.dtype}" if torch.is_tensor(context) else type(context).__name__
        raise FlowforgeError(f"context_sampler({n}, generator) returned {got}; it must return the n conditions "
                             f"of a step as an ({n}, C) floating-point tensor")
    return context


def _refuse_another_dimension(target, flow_dim: int) -> None:
    """A target that says its dimension (a :class:`Target`) and a flow of another."""
    dim = getattr(target, "dim", None)
    if isinstance(dim, int) and dim != flow_dim:
        raise FlowforgeError(f"the flow is {flow_dim}-D but target {target_name(target)} is "
                             f"{dim}-D; build the flow with {dim} features")


def variational_section(raw: dict, source: str = "config.json") -> dict | None:
    """A run's variational section (None for a run trained on data), its values checked
    (``source``: the file it came from, named when it is corrupt)."""
    section = raw.get(SECTION)
    if section is None:
        return None
    if not isinstance(section, dict) or not isinstance(section.get("target"), str) or \
            section.get("objective") not in OBJECTIVES:
        raise FlowforgeError(f"{source}: corrupt '{SECTION}' section")
    return section
