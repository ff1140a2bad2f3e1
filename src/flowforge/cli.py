"""The ``flowforge`` command line: train, sample, eval, density, plot.

Every user error ends in one line on stderr and a non-zero exit status
(1 for bad data or run directories, 2 for bad options).
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import sys
import warnings
from pathlib import Path

import click
import numpy as np
import torch

from flowforge.data import IMAGE_DATASETS, TOY_DATASETS, is_toy, load_points, load_splits, read_table, write_table
from flowforge.data.files import write_table_batches
from flowforge.errors import FlowforgeError, FlowforgeWarning, warn
from flowforge.models import MODELS
from flowforge.training import TrainConfig, load_run, log_prob, nll_summary, train as run_training
from flowforge.training.checkpoint import CONFIG, read_json
from flowforge.training.config import trainer_model_options
from flowforge.training.distributed import launch_torchrun, launched_by_torchrun
from flowforge.training.run import data_shape
from flowforge.training.rundir import record_files, run_lock
from flowforge.training.validate import DEFAULT_MAX_PARAMS, MAX_PARAMS

DATA_HELP = (f"a toy set ({', '.join(TOY_DATASETS)}), a .csv/.npy file of shape (N, D), an image set "
             f"({', '.join(IMAGE_DATASETS)}; mnist needs --data-dir) or a directory of PNG or MNIST IDX images")
DATA_DIR_HELP = "the folder holding a named image set's files (mnist: the four IDX .gz files)"
REALNVP = trainer_model_options("realnvp")
MAX_SEED = 2 ** 63 - 1
MAX_TEMPERATURE = 1e3
SAMPLE_BATCH = 65_536  # samples drawn and written at a time: memory does not grow with -n


class FiniteFloatRange(click.FloatRange):
    """A float option in a range that also refuses nan and ±inf (which pass a plain range check)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


MAX_PARAMS_OPTION = click.option(
    "--max-params", type=click.IntRange(min=1), default=DEFAULT_MAX_PARAMS, show_default=True,
    callback=lambda ctx, param, value: MAX_PARAMS.set(value) and value,  # also for the figures' own load
    help="refuse a model with more parameters than this (a run directory from elsewhere may ask for any size)")
TRAIN_OPTIONS = {  # CLI option → TrainConfig field (None: a model option)
    "data": "data", "data_dir": "data_dir", "n_train": "n_train", "steps": "steps", "batch_size": "batch_size",
    "lr": "lr", "weight_decay": "weight_decay", "seed": "seed", "eval_every": "eval_every", "grad_clip": "grad_clip",
    "on_nan": "on_nan", "ema_decay": "ema_decay", "train_noise": "train_noise", "model": "model",
    "objective": "objective", "standardize": "standardize",
    "layers": None, "hidden": None, "depth": None, "model_option": None,
}


def _model_options(layers: int | None, hidden: int | None, depth: int | None,
                   pairs: tuple[str, ...]) -> dict:
    """The builder's keyword arguments: the size flags given, then each ``--model-option KEY=VALUE``
    (VALUE read as JSON when it parses, else as a string)."""
    given = {"num_layers": layers, "hidden": hidden, "depth": depth}
    options = {k: v for k, v in given.items() if v is not None}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--model-option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="flowforge")
def cli() -> None:
    """Normalizing flows from the command line: train a model, then sample from it,
    evaluate it, compute densities and draw its pictures.

    \b
    Quick start:
      flowforge train --data moons --out runs/moons
      flowforge eval runs/moons
      flowforge sample runs/moons -n 1000 -o samples.csv
    """


@cli.command(epilog="""\b
Examples:
  flowforge train --data moons --out runs/moons
  flowforge train --data pinwheel --steps 8000 --layers 8 --out runs/pinwheel
  flowforge train --data my_table.csv --out runs/mine --seed 1
  flowforge train --resume runs/moons --steps 6000
  flowforge train --model glow --data digits --model-option bits=4 --out runs/digits
  flowforge train --model glow --data mnist --data-dir /data/mnist --model-option levels=2 --out runs/mnist
""")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="realnvp", show_default=True)
@click.option("--data", default="moons", show_default=True, help=DATA_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=DATA_DIR_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="run directory to create")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="continue the run in this directory (only --steps may change)")
@click.option("--force", is_flag=True, help="replace a run already in --out")
@click.option("--steps", type=click.IntRange(min=1), default=TrainConfig.steps, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, show_default=True)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=TrainConfig.lr, show_default=True)
@click.option("--weight-decay", type=FiniteFloatRange(min=0), default=TrainConfig.weight_decay, show_default=True)
@click.option("--layers", type=click.IntRange(min=1),
              help=f"layers of the flow (RealNVP: couplings, default {REALNVP['num_layers']}, the book's 6; "
                   "Glow: use --model-option steps=K)")
@click.option("--hidden", type=click.IntRange(min=1),
              help=f"network width (RealNVP default {REALNVP['hidden']}, the book's 256; Glow 512)")
@click.option("--depth", type=click.IntRange(min=1),
              help=f"hidden layers per network (RealNVP default {REALNVP['depth']}, the book's 4; Glow 2)")
@click.option("--model-option", multiple=True, metavar="KEY=VALUE",
              help="any other keyword of the model builder, e.g. activation=gelu, or for glow levels=3, "
                   "steps=32, bits=5, coupling=additive (repeatable)")
@click.option("--objective", default="mle", show_default=True,
              help="training objective: mle, or one the model offers")
@click.option("--n-train", type=click.IntRange(min=10), default=TrainConfig.n_train, show_default=True,
              help="training points drawn for a toy set")
@click.option("--eval-every", type=click.IntRange(min=1), default=TrainConfig.eval_every, show_default=True)
@click.option("--grad-clip", type=FiniteFloatRange(min=0, min_open=True), default=TrainConfig.grad_clip,
              show_default=True)
@click.option("--ema-decay", type=FiniteFloatRange(min=0, max=1, max_open=True), default=TrainConfig.ema_decay,
              show_default=True, help="average the weights for evaluation (0: off)")
@click.option("--train-noise", type=FiniteFloatRange(min=0, max=1, max_open=True), default=None,
              help="Gaussian noise added to training vectors, in units of each feature's std (a regulariser "
                   "against memorising small data sets); default: 0.03 for vector data, 0 for images")
@click.option("--on-nan", type=click.Choice(["rollback", "skip", "stop"]), default="rollback", show_default=True,
              help="on a non-finite loss or gradient: restore the last good state and halve the lr, "
                   "skip the step, or stop")
@click.option("--standardize/--no-standardize", default=None,
              help="train on standardised data (densities and samples stay in data units); "
                   "default: on for vector data, off for images")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="data-parallel processes on this machine (torchrun; same global batch)")
@click.option("--progress/--no-progress", default=True, help="show a progress bar")
@click.option("--plots/--no-plots", default=True, show_default=True, help="draw the figures after training")
@MAX_PARAMS_OPTION
@click.pass_context
def train(ctx: click.Context, out: Path | None, resume: Path | None, force: bool, nproc: int,
          progress: bool, plots: bool, max_params: int, **options) -> None:
    """Train a flow and write its run directory (config, metrics, weights, plots).

    With --nproc N the same command runs in N processes under torchrun; for several
    machines, run `torchrun ... -m flowforge train ...` yourself (see docs/distributed.md).
    """
    if nproc > _parallel_slots():
        raise click.BadParameter(f"{nproc} processes exceed this machine's {_parallel_slots()} CPU cores / GPUs",
                                 param_hint="--nproc")
    if nproc > 1 and not launched_by_torchrun():
        raise SystemExit(launch_torchrun(nproc, _without_nproc(ctx.obj["argv"])))
    if resume is not None:
        changed = [name for name in TRAIN_OPTIONS if name != "steps"
                   and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if changed:
            raise click.UsageError(f"--{changed[0].replace('_', '-')} cannot change on --resume (only --steps)")
        config = TrainConfig.from_dict(read_json(resume / CONFIG).get("train", {}), source=str(resume / CONFIG))
        if ctx.get_parameter_source("steps") == click.core.ParameterSource.COMMANDLINE:
            config.steps = options["steps"]
        run_dir = resume
    else:
        if out is None:
            raise click.UsageError("give --out RUN_DIR (or --resume RUN_DIR)")
        config = TrainConfig(**{field: options[name] for name, field in TRAIN_OPTIONS.items() if field},
                             model_options=_model_options(options["layers"], options["hidden"],
                                                          options["depth"], options["model_option"]))
        run_dir = out
    results = run_training(config, run_dir, resume=resume is not None, force=force, progress_bar=progress,
                           max_params=max_params)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 reports and plots
    shape = data_shape(read_json(run_dir / CONFIG))
    if isinstance(shape, tuple):
        click.echo(f"test: {results['test_bits_per_dim']:.4f} bits/dim "
                   f"(NLL {results['test_nll']:.2f} nats/image) · best validation step {results['best_step']}"
                   f" · {results['train_seconds']:.1f} s · run: {run_dir}")
    else:
        click.echo(f"test NLL: {results['test_nll']:.4f} nats/sample (standardised units; "
                   f"{results['test_nll_data']:.4f} in data units) · best validation step {results['best_step']}"
                   f" · {results['train_seconds']:.1f} s · run: {run_dir}")
    if plots:
        _plot(run_dir)


def _parallel_slots() -> int:
    """How many processes this machine can run side by side: its usable CPU cores, or its GPUs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cores, torch.cuda.device_count())


def _plot(run_dir: Path) -> None:
    """Draw a run's figures under its lock, and list them in its manifest (so --force may replace them)."""
    from flowforge.plots import plot_run

    with run_lock(run_dir):
        written = plot_run(run_dir)
        record_files(run_dir, written)
    for path in written:
        click.echo(f"wrote {path}")


@cli.command(epilog="""\b
Examples:
  flowforge sample runs/moons -n 1000 -o samples.csv
  flowforge sample runs/moons -n 5000 -o samples.npy --seed 3
  flowforge sample runs/digits -n 64 -o digits.png --temperature 0.7   # image run: digits.png + digits.npy
""")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-n", "--num", type=click.IntRange(min=1), default=1000, show_default=True, help="how many samples")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="output file, .csv or .npy (image runs: .png or .npy, and the other beside it)")
@click.option("--temperature", type=FiniteFloatRange(min=0, min_open=True, max=MAX_TEMPERATURE), default=1.0,
              show_default=True, help="scale of the latent noise")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@MAX_PARAMS_OPTION
def sample(run: Path, num: int, output: Path, temperature: float, seed: int, max_params: int) -> None:
    """Draw samples x = g(z), z ~ N(0, T²I), in data units.

    For an image run, writes the quantised images as a (N, C, H, W) uint8 array on the data's
    8-bit scale (.npy) and as a grid (.png). Samples are drawn and written in batches.
    """
    flow, _, raw = load_run(run, max_params=max_params)
    if isinstance(data_shape(raw), tuple):
        _sample_images(flow, num, output, temperature, seed)
        return
    dim = int(raw["dim"])
    batches = (_finite_samples(x, temperature).numpy() for x in _sample_batches(flow, num, temperature, seed))
    write_table_batches(output, batches, (num, dim), header=",".join(f"x{i}" for i in range(dim)))
    click.echo(f"wrote {num} samples to {output}")


def _sample_batches(flow, num: int, temperature: float, seed: int):
    """``num`` samples from one seeded generator, :data:`SAMPLE_BATCH` at a time."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, num, SAMPLE_BATCH):
        yield flow.sample(min(SAMPLE_BATCH, num - start), temperature=temperature, generator=generator)


def _finite_samples(x: torch.Tensor, temperature: float) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise FlowforgeError(f"samples at --temperature {temperature:g} are not finite (the flow's inverse "
                             "overflows there); try a lower --temperature")
    return x


def _sample_images(flow, num: int, output: Path, temperature: float, seed: int) -> None:
    from flowforge.plots.images import write_image_grid

    if output.suffix.lower() not in (".png", ".npy"):
        raise FlowforgeError(f"{output}: unsupported output type {output.suffix or '(none)'} for images; "
                             "use .png or .npy (both are written)")
    images, diverged = [], 0
    for x in _sample_batches(flow, num, temperature, seed):
        diverged += int((~torch.isfinite(x)).flatten(1).any(1).sum())
        images.append(flow.to_images(x).numpy().astype(np.uint8))
    if diverged:
        warn(f"{diverged} of {num} samples are not finite (written as 0 where not finite); "
             "try a lower --temperature")
    images = np.concatenate(images)
    array_path, grid_path = output.with_suffix(".npy"), output.with_suffix(".png")
    write_table(array_path, images)
    write_image_grid(grid_path, images, flow.bits)
    click.echo(f"wrote {num} images to {array_path} and a grid to {grid_path}")


def _points_for(run: Path, data: str | None, data_dir: str | None, shape: int | tuple[int, ...],
                config: TrainConfig) -> tuple[str, np.ndarray]:
    data_dir = data_dir or config.data_dir
    if data is None:  # the run's own held-out split
        source, points = config.data, load_splits(config.data, config.seed, config.n_train, data_dir=data_dir).test
    else:
        source, points = data, load_points(data, config.seed, data_dir=data_dir)
    if isinstance(shape, int) and points.ndim == 2 and points.shape[1] != shape:
        raise FlowforgeError(f"{source} has {points.shape[1]} columns but the model in {run} expects {shape}")
    if points.shape[1:] != ((shape,) if isinstance(shape, int) else shape):
        raise FlowforgeError(f"{source} holds samples of shape {points.shape[1:]} but the model in {run} "
                             f"expects {shape}")
    return source, points


@cli.command("eval", epilog="""\b
Examples:
  flowforge eval runs/moons
  flowforge eval runs/moons --data moons --json
  flowforge eval runs/mine --data held_out.csv
  flowforge eval runs/mnist --data-dir /data/mnist --json     # image runs add bits_per_dim
  flowforge eval runs/pinwheel-fm --json                      # FFJORD runs add nfe
""")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", default=None, help=f"{DATA_HELP}; default: the run's held-out test split")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help=f"{DATA_DIR_HELP}; default: the run's")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@MAX_PARAMS_OPTION
def evaluate(run: Path, data: str | None, data_dir: str | None, as_json: bool, max_params: int) -> None:
    """Mean negative log-likelihood of held-out data, in nats (and bits per dimension for images).

    Image runs score the discrete data: pixels are dequantised with fixed uniform noise and the
    bits/dim are (NLL_continuous + D·log 2^bits) / (D·ln 2), NLL_continuous on [0, 1] pixels.
    """
    flow, config, raw = load_run(run, max_params=max_params)
    source, points = _points_for(run, data, data_dir, data_shape(raw), config)
    summary = nll_summary(flow, points)
    if as_json:
        click.echo(json.dumps({**summary, "data": source}))
    elif "bits_per_dim" in summary:
        click.echo(f"{source}: {summary['bits_per_dim']:.4f} bits/dim · NLL {summary['nll']:.2f} ± "
                   f"{summary['nll_stderr']:.2f} nats/image (dequantised at {flow.bits} bits) · "
                   f"{summary['n']} images")
    else:
        click.echo(f"{source}: NLL {summary['nll']:.4f} ± {summary['nll_stderr']:.4f} nats/sample "
                   f"(standardised units), {summary['nll_per_dim']:.4f} nats/dim, "
                   f"{summary['nll_data']:.4f} nats/sample in data units · {summary['n']} points"
                   + (f" · {summary['nfe']} evaluations of f" if "nfe" in summary else ""))


@cli.command(epilog="""\b
Examples:
  flowforge density runs/moons points.csv -o logp.csv
  flowforge density runs/moons points.npy            # prints to stdout
""")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("points", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="output file, .csv or .npy (default: print)")
@MAX_PARAMS_OPTION
def density(run: Path, points: Path, output: Path | None, max_params: int) -> None:
    """log p(x) of each point (data units), one value per row: finite, or -inf where the flow gives
    no finite density (values beyond float32, say)."""
    flow, _, raw = load_run(run, max_params=max_params)
    if isinstance(data_shape(raw), tuple):
        raise FlowforgeError(f"{run} models images; density takes vector runs (use eval for bits/dim)")
    table = read_table(points, dtype=np.float64)  # float32 overflow is the evaluator's to score (-inf)
    if table.shape[1] != int(raw["dim"]):
        raise FlowforgeError(f"{points} has {table.shape[1]} columns but the model in {run} expects {raw['dim']}")
    values = log_prob(flow, table).numpy().astype(np.float64)
    if output is None:
        click.echo("\n".join(f"{v:.8g}" for v in values))
    else:
        write_table(output, values[:, None], header="log_prob")
        click.echo(f"wrote {len(values)} log-densities to {output}")


@cli.command(epilog="""\b
Example:
  flowforge plot runs/moons      # writes runs/moons/plots/*.png
""")
@click.argument("run", type=click.Path(path_type=Path))
@MAX_PARAMS_OPTION
def plot(run: Path, max_params: int) -> None:
    """Draw the chapter's 2×2 figure, the density heat map and the training curve."""
    load_run(run, max_params=max_params)  # refuse an untrusted run before drawing anything
    _plot(run)


def _without_nproc(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def _report(message: str) -> None:
    """One error line, from rank 0 only when several processes share a run."""
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"flowforge: {message}", err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Any warning (flowforge's, numpy's, torch's) as one line in flowforge's words."""
    text = " ".join(str(message).split()) or category.__name__
    origin = "" if issubclass(category, FlowforgeWarning) else f" ({category.__name__})"
    _report(f"warning: {text[:300]}{origin}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per error, never a traceback (set FLOWFORGE_DEBUG=1 to see one)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():  # Python's filters stay: each warning once, deprecations hidden
        warnings.showwarning = _show_warning
        return contextvars.copy_context().run(_main, argv)  # --max-params stays within this call


def _main(argv: list[str]) -> int:
    try:
        cli.main(args=argv, prog_name="flowforge", standalone_mode=False, obj={"argv": argv})
        return 0
    except SystemExit as done:  # the exit status of a torchrun launch
        return int(done.code or 0)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.Abort:
        _report("aborted")
        return 130
    except click.ClickException as err:
        _report(f"error: {err.format_message()}")
        return 2
    except FlowforgeError as err:
        _report(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        _report("interrupted")
        return 130
    except OSError as err:  # a full or read-only disk, a vanished file: the machine's state, not a bug
        where = f"{err.filename}: " if err.filename else ""
        _report(f"error: {where}{err.strerror or err}")
        return 1
    except Exception as err:  # noqa: BLE001 - the last line of defence for the one-line promise
        if os.environ.get("FLOWFORGE_DEBUG"):
            raise
        _report(f"internal error: {type(err).__name__}: {err} (FLOWFORGE_DEBUG=1 shows more)")
        return 3


def run() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    sys.exit(main())
