"""The ``flowforge`` command line: train, sample, eval, density, plot.

Every user error ends in one line on stderr and a non-zero exit status
(1 for bad data or run directories, 2 for bad options).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import sys
import warnings
from pathlib import Path

import click

from flowforge.atomic import refuse_to_replace
from flowforge.data import IMAGE_DATASETS, TOY_DATASETS, is_toy
from flowforge.errors import REPORTED_FILE, FlowforgeError, FlowforgeWarning, warn
from flowforge.models.specs import SPECS, spec_of
from flowforge.training.config import TrainConfig, cli_fields
from flowforge.training.fields import DEFAULT_MAX_PARAMS, MAX_PARAMS, TRAIN_FIELDS
from flowforge.training.memory import keep_freed_memory
from flowforge.cli_resume import given_on_command_line, recorded_config, refuse_changes_on_resume
from flowforge.variational.cli import fit as fit_command

# torch and the rest are imported inside the commands: `flowforge --help` answers without them.
DATA_HELP = (f"a toy set ({', '.join(TOY_DATASETS)}), a .csv/.npy file of shape (N, D), an image set "
             f"({', '.join(IMAGE_DATASETS)}; mnist needs --data-dir), a directory of PNG or MNIST IDX images, "
             "or a .npy image array (N, C, H, W) of pixels 0-255")
DATA_DIR_HELP = "the folder holding a named image set's files (mnist: the four IDX .gz files)"
MAX_SEED = 2 ** 63 - 1
MAX_TEMPERATURE = 1e3
SAMPLE_BATCH = 65_536  # samples drawn and written at a time: memory does not grow with -n
SIZE_FLAGS = ("layers", "hidden", "depth")  # the generic size options, mapped per model by its spec


class FiniteFloatRange(click.FloatRange):
    """A float option in a range that also refuses nan and ±inf (which pass a plain range check)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


FORCE_OUTPUT_OPTION = click.option("--force", is_flag=True, help="replace the output file(s) if they exist")
IMPORT_TARGET_OPTION = click.option(
    "--import-target", is_flag=True,
    help="runs fitted to a user's path.py:function: import that file again (it runs its code) to evaluate "
         "or resample against it; refused if the file changed since the fit")
MAX_PARAMS_OPTION = click.option(
    "--max-params", type=click.IntRange(min=1), default=DEFAULT_MAX_PARAMS, show_default=True,
    callback=lambda ctx, param, value: MAX_PARAMS.set(value) and value,  # also for the figures' own load
    help="refuse a model with more parameters than this (a run directory from elsewhere may ask for any size)")
def DEVICE_OPTION(command):
    """``--device`` and ``--dtype`` of the commands that load a run."""
    command = click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
                           help="compute in this type [default: the run's]")(command)
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when available), cpu, cuda or cuda:N")(command)


def CONTEXT_OPTIONS(command):
    """``--context`` and ``--context-file`` of the commands that use a conditional run."""
    command = click.option("--context-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="conditional runs: one condition per row (.csv/.npy: the context columns, or "
                                "one column of classes)")(command)
    return click.option("--context", "context_text", default=None, metavar="VALUES",
                        help="conditional runs: the condition, comma-separated values of the context columns "
                             "(e.g. 0.5,1.2) or a class (e.g. 3)")(command)


def _option_type(name: str):
    """The click type of TrainConfig field ``name``, from its range in flowforge.training.fields."""
    spec = TRAIN_FIELDS[name]
    if name == "model":
        return click.Choice(sorted(SPECS))
    if name == "context":
        return _ContextChoice(list(spec.choices))
    if spec.choices:
        return click.Choice(list(spec.choices))
    if spec.kind is int:
        return click.IntRange(spec.low, spec.high)
    if spec.kind is float:
        return FiniteFloatRange(spec.low, spec.high, min_open=spec.low_open, max_open=spec.high_open)
    return str


class _ContextChoice(click.Choice):
    """``train --context``: 'label' only; column names point to --context-columns."""

    def convert(self, value, param, ctx):
        if value not in self.choices and isinstance(value, str):
            self.fail(f"{value!r} is not 'label'; to condition on a table's columns give --context-columns {value}",
                      param, ctx)
        return super().convert(value, param, ctx)


def config_options(command):
    """One ``--name`` option per TrainConfig field marked for the command line: a field that is
    None by default says it is the recipe's (``flowforge train --help`` lists each model's)."""
    for name, default, text in reversed(cli_fields()):
        command = click.option(f"--{name.replace('_', '-')}", name, type=_option_type(name), default=None,
                               help=f"{text} [default: {default}]")(command)
    return command


def _recipe_epilog() -> str:
    """The models and, for each, the recipe it takes on its natural data (every spec, as registered)."""
    from flowforge.models.specs import NATURAL_DATA

    lines = ["\b", "Models:", *(f"  {name}: {spec.summary}" for name, spec in sorted(SPECS.items())),
             "Recipes (the defaults each model takes for each kind of data; see docs/recipes.md):"]
    for name, spec in sorted(SPECS.items()):
        label, info = NATURAL_DATA[spec.input_kind]
        shown = ", ".join(f"{k}={v}" for k, v in spec.recipe(info).items() if k != "model_options")
        lines.append(f"  {name}, {label}: {shown}")
    lines.append("  vector models, a table: evaluation every epoch, early stopping, size by rows")
    return "\n".join(lines)


def _model_options(model: str, sizes: dict[str, int | None], pairs: tuple[str, ...]) -> dict:
    """The builder's keyword arguments: ``--layers/--hidden/--depth`` under the model's own names
    (refused where it has none), then each ``--model-option KEY=VALUE`` (VALUE read by
    :func:`_option_value`, then as the type of the builder's default: :func:`_typed_option`)."""
    names = spec_of(model).size_options
    options = {}
    for flag, value in sizes.items():
        if value is None:
            continue
        if flag not in names:
            raise click.BadParameter(f"{model} has no such option", param_hint=f"--{flag}")
        options[names[flag]] = value
    defaults, from_flags = spec_of(model).builder_options(), set(options)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--model-option")
        if key in from_flags:
            raise click.BadParameter(f"{key} is given twice (by {pair!r} and a size flag)", param_hint="--model-option")
        options[key] = _option_value(value)
        if key in defaults:
            options[key] = _typed_option(key, options[key], defaults[key], pair)
    return options


def _option_value(text: str):
    """A --model-option VALUE: JSON when it parses (also as a list without brackets: 1,0,1,0), else the text."""
    for candidate in (text, f"[{text}]" if "," in text else None):
        try:
            return json.loads(candidate) if candidate is not None else text
        except json.JSONDecodeError:
            continue
    return text


BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _typed_option(key: str, value, default, pair: str):
    """A --model-option value of the type of the builder's default (a bool, a whole number or a
    number; others as given), or a usage error naming what the option takes."""
    def refuse(kind: str):
        raise click.BadParameter(f"{pair!r}: {key} takes {kind}", param_hint="--model-option")

    if value is None:  # JSON null: the builder's own "none" (e.g. logit=null)
        return None
    if isinstance(default, bool):
        word = str(value).strip().lower()
        return BOOLEAN_WORDS[word] if word in BOOLEAN_WORDS else refuse("true or false")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            refuse("a whole number")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            refuse("a finite number")
        return float(value)
    return value


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


cli.add_command(fit_command)  # flowforge fit: a flow fitted to a target density (flowforge.variational)


@cli.command(epilog="""\b
Examples:
  flowforge train --data moons --out runs/moons
  flowforge train --data pinwheel --steps 8000 --layers 8 --out runs/pinwheel
  flowforge train --data my_table.csv --out runs/mine --seed 1
  flowforge train --resume runs/moons --steps 6000
  flowforge train --model glow --data digits --out runs/digits
  flowforge train --model glow --data mnist --data-dir /data/mnist --model-option levels=2 --out runs/mnist
  flowforge train --recipe book --out runs/book        # the book notebook's RealNVP on 30,000 moons
  flowforge train --model nsf --data sims.csv --context-columns theta1,theta2 --out runs/sbi   # p(x | θ)
  flowforge train --data moons --context label --out runs/moons-cond     # p(x | which moon)
  flowforge train --model glow --data digits --context label --out runs/digits-cond   # class-conditional
""" + "\n" + _recipe_epilog())
@click.option("--data", default=None, help=f"{DATA_HELP} [default: moons]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=DATA_DIR_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="run directory to create")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="continue the run in this directory with its recorded options (only --steps, --device, --nproc, "
                   "--progress/--no-progress, --plots/--no-plots and --max-params may be given)")
@click.option("--force", is_flag=True, help="replace a run already in --out")
@click.option("--recipe", "recipe_name", default=None, help="a named recipe instead of the model's own (book)")
@click.option("--context-columns", default=None, metavar="A,B",
              help="a table's columns to condition on (header names or 0-based indices): learns "
                   "p(other columns | A, B)")
@config_options
@click.option("--layers", type=click.IntRange(min=1), help="layers of the flow, under the model's own name "
              "(realnvp/nsf/maf/ffjord: num_layers; glow: steps per level; realnvp-image: scales)")
@click.option("--hidden", type=click.IntRange(min=1), help="network width")
@click.option("--depth", type=click.IntRange(min=1), help="hidden layers per network")
@click.option("--model-option", multiple=True, metavar="KEY=VALUE",
              help="any other keyword of the model builder, e.g. activation=gelu, or for glow levels=3, "
                   "steps=32, bits=5, coupling=additive (repeatable; read as the type of the builder's default: "
                   "lu=false, hidden=128, scale_bound=3.0)")
@click.option("--standardize/--no-standardize", default=None,
              help="train on standardised data (densities and samples stay in data units); "
                   "default: on for vector data, off for images")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="data-parallel processes on this machine (torchrun; same global batch)")
@click.option("--progress/--no-progress", default=True, help="show a progress bar")
@click.option("--plots/--no-plots", default=True, show_default=True, help="draw the figures after training")
@MAX_PARAMS_OPTION
@click.pass_context
def train(ctx: click.Context, out: Path | None, resume: Path | None, force: bool, recipe_name: str | None,
          nproc: int, progress: bool, plots: bool, max_params: int, **options) -> None:
    """Train a flow and write its run directory (config, metrics, weights, plots).

    Options left out take the model's recipe for the data (listed below). With --nproc N the
    same command runs in N processes under torchrun; for several machines, run
    `torchrun ... -m flowforge train ...` yourself (see docs/distributed.md).
    """
    from flowforge.training import train as run_training
    from flowforge.training.distributed import launch_torchrun, launched_by_torchrun
    from flowforge.training.rundir import figures_folder

    if nproc > _parallel_slots():
        raise click.BadParameter(f"{nproc} processes exceed this machine's {_parallel_slots()} CPU cores / GPUs",
                                 param_hint="--nproc")
    if nproc > 1 and not launched_by_torchrun():
        raise SystemExit(launch_torchrun(nproc, _without_nproc(ctx.obj["argv"])))
    if resume is not None:
        config, run_dir = _resumed_config(ctx, resume, options), resume
    else:
        if out is None:
            raise click.UsageError("give --out RUN_DIR (or --resume RUN_DIR)")
        config, run_dir = _new_config(recipe_name, options), out
        if given_on_command_line(ctx, "n_train") and not is_toy(config.data):
            raise click.BadParameter(f"draws a toy set's training points ({', '.join(TOY_DATASETS)}); "
                                     f"{config.data} is used as it is", param_hint="--n-train")
    if plots:
        figures_folder(run_dir)  # a plots link is refused before training, not after it
    results = run_training(config, run_dir, resume=resume is not None, force=force, progress_bar=progress,
                           max_params=max_params)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 reports and plots
    click.echo(_results_line(config.model, results, run_dir))
    if plots:
        _plot(run_dir)


def _new_config(recipe_name: str | None, options: dict) -> TrainConfig:
    """The config of a new run: the options given, over a named recipe's values if one is asked
    for (the model's recipe fills in the rest when the data are loaded)."""
    named: dict = {}
    if recipe_name is not None:
        from flowforge.models.recipes import RECIPES

        if recipe_name not in RECIPES:
            raise click.BadParameter(f"unknown recipe {recipe_name!r}; choose from {', '.join(sorted(RECIPES))}",
                                     param_hint="--recipe")
        named = dict(RECIPES[recipe_name])
    given = {name: options[name] for name in (*(n for n, _, _ in cli_fields()), "data", "data_dir", "standardize")
             if options[name] is not None}
    if options["context_columns"] is not None:
        given["context_columns"] = _column_list(options["context_columns"])
    values = {**{k: v for k, v in named.items() if k != "model_options"}, **given, **_absolute_paths(given)}
    model = values.get("model", "realnvp")
    model_options = {**named.get("model_options", {}),
                     **_model_options(model, {k: options[k] for k in SIZE_FLAGS}, options["model_option"])}
    return TrainConfig(**{**values, "recipe": recipe_name}, model_options=model_options)


def _column_list(text: str) -> list[str]:
    """``--context-columns a,b`` as ["a", "b"]; an empty name is refused."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise click.BadParameter(f"{text!r} is not a comma-separated list of columns", param_hint="--context-columns")
    return names


def _absolute_paths(given: dict) -> dict:
    """A data file or folder recorded as an absolute path, so the run resumes and evaluates from
    any working directory (a data set's name stays a name)."""
    named = set(TOY_DATASETS) | set(IMAGE_DATASETS)
    paths = {key: given[key] for key in ("data", "data_dir") if given.get(key) and given[key] not in named}
    return {key: str(Path(value).resolve()) for key, value in paths.items() if Path(value).exists()}


def _resumed_config(ctx: click.Context, resume: Path, options: dict) -> TrainConfig:
    from flowforge.training.checkpoint import CONFIG
    from flowforge.training.run import data_shape
    from flowforge.training.rundir import run_lock

    refuse_changes_on_resume(ctx, ("steps", "device", "nproc", "progress", "plots", "max_params"))
    with run_lock(resume) if resume.is_dir() else contextlib.nullcontext():  # a writer at work: refused
        raw = recorded_config(resume)
    if _fitted_to_target(raw, resume):
        raise FlowforgeError(f"{resume} was fitted to a target, not trained on data; resume it with flowforge fit "
                             "--resume")
    data_shape(raw)  # a corrupt 'dim' is refused before anything runs
    config = TrainConfig.from_dict(raw.get("train", {}), source=str(resume / CONFIG),
                                   version=raw.get("config_version", 1))
    if options["steps"] is not None:
        config.steps = options["steps"]
    if options["device"] is not None:
        config.device = options["device"]
    return config


def _results_line(model: str, results: dict, run_dir: Path) -> str:
    """The one line a finished run prints: bits/dim for image families, NLL (and the Gaussian
    baseline) for vector ones."""
    tail = f" · best validation step {results['best_step']} · {results['train_seconds']:.1f} s · run: {run_dir}"
    if "bits_per_dim" in spec_of(model).metrics:
        return (f"test: {results['test_bits_per_dim']:.4f} bits/dim (NLL {results['test_nll']:.2f} nats/image)"
                + tail)
    gaussian = "a Gaussian linear in the context" if results.get("conditional") else "a full-covariance Gaussian"
    baseline = (f"; {gaussian}: {results['test_gaussian_nll']:.4f}" if "test_gaussian_nll" in results else "")
    units = (f"standardised units; {results['test_nll_data']:.4f} in data units"
             if _standardised(results["test_nll"], results["test_nll_data"]) else "data units")
    return f"test NLL: {results['test_nll']:.4f} nats/sample ({units}{baseline})" + tail


def _standardised(nll: float, nll_data: float) -> bool:
    """Whether a report's NLL is in standardised units: it equals the data-unit NLL exactly when the
    data were not standardised (the offset Σ log std is 0), and then one figure, in data units, is said."""
    return nll != nll_data


def _parallel_slots() -> int:
    """How many processes this machine can run side by side: its usable CPU cores, or its GPUs."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cores, torch.cuda.device_count())


def _plot(run_dir: Path, with_data: bool = True) -> None:
    """Draw a run's figures under its lock, and list them in its manifest (so --force may replace them)."""
    from flowforge.plots import plot_run
    from flowforge.training.rundir import record_files, run_lock

    with run_lock(run_dir):
        written = plot_run(run_dir, with_data)
        record_files(run_dir, written)
    for path in written:
        click.echo(f"wrote {path}")


def _kept_files(run: Path, raw: dict) -> list[Path]:
    """Files an output of `sample` or `density` may never replace, even with --force: the run's own
    files and the data it was trained on (a fitted run's target file)."""
    from flowforge.data import IMAGE_DATASETS, is_toy
    from flowforge.training.rundir import flowforge_files

    data = (raw.get("train") or {}).get("data")
    if not isinstance(data, str) or is_toy(data) or data in IMAGE_DATASETS or Path(data).is_dir():
        return flowforge_files(run)  # a file of the user's (a table, an image array, a target) is kept below
    return [*flowforge_files(run), Path(data.rpartition(":")[0] if ".py:" in data else data)]  # path.py:fn


def _load(run: Path, max_params: int, device: str = "cpu", dtype: str | None = None):
    """A run's flow (refused if untrusted) on ``device`` in ``dtype``, its config, its config file
    and its model's spec."""
    from flowforge.training import load_run
    from flowforge.training.device import resolve_dtype

    flow, config, raw = load_run(run, max_params=max_params, device=device)
    if dtype is not None:
        flow = flow.to(dtype=resolve_dtype(dtype))
    _warn_if_unfinished(run, raw, config)
    return flow, config, raw, spec_of(config.model)


def _warn_if_unfinished(run: Path, raw: dict, config: TrainConfig) -> None:
    """A training run without its results (stopped part-way, or still training) holds its best
    weights so far: said once, so that no figure of it passes for the finished run's."""
    from flowforge.training.rundir import warn_if_unfinished

    if not _fitted_to_target(raw, run):  # a fit's report says so itself
        warn_if_unfinished(run, "training", "train", config.steps)


@cli.command(epilog="""\b
Examples:
  flowforge sample runs/moons -n 1000 -o samples.csv
  flowforge sample runs/moons -n 5000 -o samples.npy --seed 3
  flowforge sample runs/moons -n 5 -o -                           # CSV on standard output
  flowforge sample runs/digits -n 64 -o digits.png --temperature 0.7   # image run: digits.png + digits.npy
  flowforge sample runs/sbi -n 100 --context 0.5,1.2 -o draws.csv    # a conditional run: p(x | c)
  flowforge sample runs/sbi -n 10 --context-file thetas.csv -o draws.csv   # -n for each row's condition
  flowforge sample runs/digits-cond -n 64 --context 3 -o threes.png    # class 3 of a label run
""")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-n", "--num", type=click.IntRange(min=1), default=1000, show_default=True, help="how many samples")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), required=True,
              help="output file, .csv or .npy, or - for CSV on standard output (image runs: .png or .npy, and "
              "the other beside it)")
@click.option("--temperature", type=FiniteFloatRange(min=0, min_open=True, max=MAX_TEMPERATURE), default=1.0,
              show_default=True, help="scale of the latent noise")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--resample", is_flag=True, help="runs of `flowforge fit`: importance-resampled draws, closer to the "
              "target (chosen with replacement from 8·n draws of the flow, each with probability ∝ p̃/q)")
@IMPORT_TARGET_OPTION
@FORCE_OUTPUT_OPTION
@CONTEXT_OPTIONS
@DEVICE_OPTION
@MAX_PARAMS_OPTION
def sample(run: Path, num: int, output: str, temperature: float, seed: int, device: str, dtype: str | None,
           max_params: int, context_text: str | None = None, context_file: Path | None = None,
           resample: bool = False, import_target: bool = False, force: bool = False) -> None:
    """Draw samples x = g(z), z ~ N(0, T²I), in data units (a table's columns keep its header's names).

    For an image run, writes the quantised images as a (N, C, H, W) uint8 array on the data's
    8-bit scale (.npy) and as a grid (.png). Samples are drawn and written in batches. A conditional
    run draws -n samples for each condition (--context, or each row of --context-file), and a
    table's rows start with the condition's columns.
    """
    import numpy as np

    from flowforge.data.files import write_table_batches

    flow, _, raw, spec = _load(run, max_params, device, dtype)
    if import_target and not resample:
        raise click.UsageError("--import-target goes with --resample (plain draws of q need no target)")
    if resample:
        _check_resample(raw, run, click.get_current_context())
    info, conditions = _run_conditions(run, raw, context_text, context_file, _numpy_dtype(flow))
    to_stdout, output = output == "-", Path(output)  # "./-" is a file of that name
    if to_stdout and sys.stdout is None:
        raise FlowforgeError("-o -: standard output is closed; give -o FILE")
    if to_stdout and spec.images:
        raise click.UsageError("-o -: an image run writes a .png grid and a .npy array; give -o FILE.png")
    if not to_stdout:
        refuse_to_replace(_image_outputs(output) if spec.images else (output,), force, inputs=(run, context_file),
                          kept=_kept_files(run, raw))
    if spec.images:
        _sample_images(flow, num, output, temperature, seed, conditions)
        return
    dim = int(raw["dim"])
    columns = raw.get("columns") if isinstance(raw.get("columns"), list) and len(raw["columns"]) == dim else None
    if columns is None and raw.get("columns") is not None:
        warn(f"{run / 'config.json'}: its 'columns' are not {dim} names; the samples' header is x0, x1, …")
    names = [str(c) for c in columns] if columns else [f"x{i}" for i in range(dim)]
    draws = (_variational().resampled_batches(flow, raw, num, seed, import_target=import_target) if resample
             else _sample_batches(flow, num, temperature, seed, conditions))
    batches = (_finite_samples(x, temperature).cpu().numpy() for x in draws)
    if info is not None:
        names = _condition_names(info) + names
        batches = _with_conditions(batches, info, conditions, num)
    rows = num * (1 if conditions is None else len(conditions))
    write_table_batches("-" if to_stdout else output, batches, (rows, len(names)), _numpy_dtype(flow),
                        header=",".join(_csv_name(n) for n in names), fmt=_digits(flow))
    if not to_stdout:  # standard output holds the samples alone
        click.echo(f"wrote {rows} samples to {output}" + (f" ({num} for each of {len(conditions)} conditions)"
                                                          if conditions is not None and len(conditions) > 1 else ""))


def _check_resample(raw: dict, run: Path, ctx: click.Context) -> None:
    """--resample draws by the importance weights of a run fitted to a target: refused for a run
    trained on data (no target to weigh by) and with --temperature (the weights are for q itself)."""
    if not _fitted_to_target(raw, run):
        raise click.UsageError("--resample: only a run of `flowforge fit` has a target to weigh draws by")
    if given_on_command_line(ctx, "temperature"):
        raise click.UsageError("--temperature cannot be given with --resample (the draws are reweighted towards "
                               "the target, not drawn from a scaled latent)")


def _run_conditions(run: Path, raw: dict, text: str | None, file: Path | None, dtype: type):
    """(the run's ContextInfo or None, the conditions asked for as an (N, K) array of the flow's
    ``dtype`` or None): a conditional run needs exactly one of --context and --context-file, an
    unconditional one neither."""
    from flowforge.data.context import ContextInfo, conditions_from_table, parse_condition

    info = ContextInfo.from_dict(raw.get("context"), str(run / "config.json"))
    given = [flag for flag, value in (("--context", text), ("--context-file", file)) if value is not None]
    if info is None:
        if given:
            raise FlowforgeError(f"{run} is unconditional: it takes no {given[0]}")
        return None, None
    if len(given) != 1:
        what = "a class" if info.kind == "label" else f"values of {', '.join(info.names)}"
        raise FlowforgeError(f"{run} is conditional ({info.kind}: {', '.join(info.names[:10])}): give --context "
                             f"({what}) or --context-file, one of them")
    if text is not None:
        return info, parse_condition(text, info, dtype)
    import numpy as np

    from flowforge.data import read_table, table_columns

    table = read_table(file, dtype=np.float64)  # narrowed to the flow's type with a check
    names = table_columns(file, table.shape[1]) if file.suffix.lower() == ".csv" else None
    return info, conditions_from_table(table, info, str(file), names, dtype)


def _numpy_dtype(flow):
    """The NumPy type of the flow's weights (float32 or float64): what its data are read and written as."""
    import numpy as np
    import torch

    from flowforge.training.device import flow_device

    return np.float64 if flow_device(flow)[1] == torch.float64 else np.float32


def _digits(flow) -> str:
    """The printf format that writes a value of the flow's type in full (float64: 17 digits)."""
    import numpy as np

    return "%.17g" if _numpy_dtype(flow) == np.float64 else "%.8g"


def _condition_names(info) -> list[str]:
    return ["label"] if info.kind == "label" else list(info.names)


def _with_conditions(batches, info, conditions, num: int):
    """Each batch of samples with its condition's columns in front (a label run: the class)."""
    import numpy as np

    shown = conditions.argmax(1)[:, None].astype(np.float32) if info.kind == "label" else conditions
    drawn = 0
    for batch in batches:  # a batch may hold the draws of several conditions, -n rows each
        yield np.column_stack([shown[(drawn + np.arange(len(batch))) // num], batch])
        drawn += len(batch)


def _csv_name(name: str) -> str:
    """A column name as a CSV header cell (quoted when it holds a comma, a quote or a line break)."""
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n\r') else name


def _sample_batches(flow, num: int, temperature: float, seed: int, conditions=None):
    """``num`` samples (for each condition, one after the other) from one seeded generator, about
    :data:`SAMPLE_BATCH` at a time: several conditions share a batch when ``num`` is small."""
    import torch

    from flowforge.training.device import flow_device

    device, dtype = flow_device(flow)
    generator = torch.Generator(device).manual_seed(seed)
    if conditions is None:
        for start in range(0, num, SAMPLE_BATCH):
            yield flow.sample(min(SAMPLE_BATCH, num - start), temperature=temperature, generator=generator)
        return
    rows = torch.as_tensor(conditions).to(device, dtype)
    together = max(1, SAMPLE_BATCH // max(1, num))
    for first in range(0, len(rows), together):
        chunk = rows[first:first + together]
        for start in range(0, num, SAMPLE_BATCH):
            x = flow.sample((min(SAMPLE_BATCH, num - start),), chunk, temperature=temperature, generator=generator)
            yield x.transpose(0, 1).flatten(0, 1)  # (draws, conditions, ...) → condition after condition


def _finite_samples(x, temperature: float):
    import torch

    if not torch.isfinite(x).all():
        raise FlowforgeError(f"samples at --temperature {temperature:g} are not finite (the flow's inverse "
                             "overflows there); try a lower --temperature")
    return x


def _image_outputs(output: Path) -> tuple[Path, Path]:
    """An image sample's two files, the array (.npy) and the grid (.png), from either's name: the
    one asked for first."""
    if output.suffix.lower() not in (".png", ".npy"):
        raise FlowforgeError(f"{output}: unsupported output type {output.suffix or '(none)'} for images; "
                             "use .png or .npy (both are written)")
    other = output.with_suffix(".png" if output.suffix.lower() == ".npy" else ".npy")
    return output, other  # the file asked for first: a message about both names it


def _sample_images(flow, num: int, output: Path, temperature: float, seed: int, conditions=None) -> None:
    import numpy as np
    import torch

    from flowforge.data import write_table
    from flowforge.plots.images import write_image_grid

    array_path, grid_path = sorted(_image_outputs(output), key=lambda path: path.suffix.lower() != ".npy")
    images, diverged = [], 0
    for x in _sample_batches(flow, num, temperature, seed, conditions):
        diverged += int((~torch.isfinite(x)).flatten(1).any(1).sum())
        images.append(flow.to_images(x).cpu().numpy().astype(np.uint8))
    images = np.concatenate(images)
    if diverged:
        warn(f"{diverged} of {len(images)} samples are not finite (written as 0 where not finite); "
             "try a lower --temperature")
    write_table(array_path, images)
    write_image_grid(grid_path, images, flow.bits)
    click.echo(f"wrote {len(images)} images to {array_path} and a grid to {grid_path}")


def _points_for(run: Path, data: str | None, data_dir: str | None, shape: int | tuple[int, ...],
                config: TrainConfig, raw: dict, dtype=None):
    """(the source's name, its points, their conditions or None): the run's held-out test split, a
    named set's, or a file's rows (a conditional run's file laid out as its training table), read
    as ``dtype`` (the flow's: a float64 run's numbers are not rounded to float32 first)."""
    import numpy as np

    from flowforge.data import is_image_source, is_toy, load_points, load_splits

    dtype = dtype or np.float32

    data_dir = data_dir or config.data_dir
    source = config.data if data is None else data
    conditions = None
    if data is None:
        _check_training_data(run, raw, config, "--data FILE scores a file's every row", data_dir)
    if config.conditions_on is not None and (data is None or is_toy(data) or is_image_source(data)):
        splits = load_splits(source, config.seed, config.n_train, data_dir=data_dir, context=config.conditions_on,
                             dtype=dtype)
        recorded = raw.get("context") or {}
        if splits.context_info.dim != len(recorded.get("names", [])):
            raise FlowforgeError(f"{source} carries a context of {splits.context_info.dim} values but the run in {run} "
                                 f"conditions on {len(recorded.get('names', []))}")
        points, conditions = splits.test, splits.context[2]
    elif data is None:  # the run's own held-out split
        points = load_splits(config.data, config.seed, config.n_train, data_dir=data_dir, dtype=dtype).test
    elif config.conditions_on is not None:
        points, conditions = _conditioned_rows(run, Path(data), raw, shape, dtype)
    else:
        points = _in_run_order(load_points(data, config.seed, data_dir=data_dir, dtype=dtype), Path(data), raw)
    if isinstance(shape, int) and points.ndim == 2 and points.shape[1] != shape:
        raise FlowforgeError(f"{source} has {points.shape[1]} columns but the model in {run} expects {shape}")
    if points.shape[1:] != ((shape,) if isinstance(shape, int) else shape):
        raise FlowforgeError(f"{source} holds samples of shape {points.shape[1:]} but the model in {run} "
                             f"expects {shape}")
    return source, points, conditions


def _check_training_data(run: Path, raw: dict, config: TrainConfig, instead: str, data_dir: str | None = None) -> None:
    """Before reading the data a run was trained on again: one line when it is gone, a warning when it
    changed since (its splits are not the run's); ``instead`` says what the user can do about it."""
    from flowforge.data import changed_data, is_image_source, is_toy

    source = config.data
    if not (is_toy(source) or is_image_source(source) or Path(source).exists()):
        raise FlowforgeError(f"{source}: no such file (the data {run} was trained on; {instead})")
    changed = changed_data(raw, data_dir)
    if changed is not None and Path(changed).exists():  # MNIST's folder gone is the loader's to say
        warn(f"{changed}: changed since {run} was trained on it; its splits are not the run's ({instead})")


def _conditioned_rows(run: Path, path: Path, raw: dict, dim: int, dtype=None, or_else: str = "",
                      context_dtype=None):
    """A file's points (read as ``dtype``) and their conditions (as ``context_dtype``, the flow's;
    default ``dtype``), laid out as the run's training table (or, for a label run, x's columns and a
    'label' column); ``or_else`` ends the message of a file that is not (what else the command takes)."""
    import numpy as np

    from flowforge.data import read_table, table_columns
    from flowforge.data.context import ContextInfo, points_and_conditions

    table = read_table(path, dtype=dtype or np.float32)
    names = table_columns(path, table.shape[1]) if path.suffix.lower() == ".csv" else None
    info = ContextInfo.from_dict(raw.get("context"), str(run / "config.json"))
    recorded = raw.get("columns")
    x_names = [str(c) for c in recorded] if isinstance(recorded, list) and len(recorded) == dim else \
        [f"x{i}" for i in range(dim)]
    return points_and_conditions(table, names, info, x_names, str(path), or_else,
                                 context_dtype or dtype or np.float32)


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
@IMPORT_TARGET_OPTION
@DEVICE_OPTION
@MAX_PARAMS_OPTION
def evaluate(run: Path, data: str | None, data_dir: str | None, as_json: bool, device: str, dtype: str | None,
             max_params: int, import_target: bool = False) -> None:
    """Mean negative log-likelihood of held-out data, in nats (and bits per dimension for images);
    for a run of `flowforge fit`, the ELBO, log Z ± its standard error, ESS per draw and Pareto k̂
    against its target, on 20,000 fresh draws (a user's path.py:function target: the figures stored
    at fit time, or fresh ones with --import-target).

    Image runs score the discrete data: pixels are dequantised with fixed uniform noise and the
    bits/dim are (NLL_continuous + D·log 2^bits) / (D·ln 2), NLL_continuous on [0, 1] pixels.
    """
    from flowforge.training import nll_summary
    from flowforge.training.run import data_shape

    flow, config, raw, spec = _load(run, max_params, device, dtype)
    if _fitted_to_target(raw, run):  # ELBO, log Z, ESS, Pareto k (flowforge.variational.report)
        if data is not None or data_dir is not None:
            raise click.UsageError("--data/--data-dir: a run fitted to a target is evaluated against that target, "
                                   "not data")
        summary = _variational().evaluate_run(run, flow, raw, import_target=import_target)
        return click.echo(json.dumps(summary) if as_json else _variational().eval_line(summary))
    if import_target:
        raise click.UsageError("--import-target: only a run of `flowforge fit` has a target to import")
    source, points, conditions = _points_for(run, data, data_dir, data_shape(raw), config, raw, _numpy_dtype(flow))
    summary = nll_summary(flow, points, spec.metrics, context=conditions)
    if as_json:
        click.echo(json.dumps({**summary, "data": source, **({"split": "test"} if data is None else {})}))
    else:
        click.echo(_nll_line(summary, source, " of its held-out test split" if data is None else "",
                             flow.bits if "bits_per_dim" in spec.metrics else None))


def _nll_line(summary: dict, source: str, held_out: str, bits: int | None) -> str:
    """``eval``'s line: the NLL ± its standard error, per sample and per dimension (an image run's: in
    bits/dim and nats/image, dequantised at ``bits``)."""
    n = summary["n"]
    if bits is not None:
        return (f"{source}: {summary['bits_per_dim']:.4f} bits/dim · NLL {summary['nll']:.2f}"
                f"{_plus_minus(summary['nll_stderr'], 2)} nats/image (dequantised at {bits} bit{'s' * (bits != 1)}) · "
                f"{n} image{'s' * (n != 1)}{held_out}")
    standardised = _standardised(summary["nll"], summary["nll_data"])
    return (f"{source}: NLL {summary['nll']:.4f}{_plus_minus(summary['nll_stderr'], 4)} nats/sample "
            f"({'standardised' if standardised else 'data'} units), {summary['nll_per_dim']:.4f} nats/dim"
            + (f", {summary['nll_data']:.4f} nats/sample in data units" if standardised else "")
            + f" · {n} point{'s' * (n != 1)}{held_out}" + (f" · {summary['nfe']} evaluations of f" if "nfe" in summary else ""))


def _plus_minus(stderr: float | None, digits: int) -> str:
    """" ± SE", or nothing for a single point (no standard error)."""
    return "" if stderr is None else f" ± {stderr:.{digits}f}"


@cli.command(epilog="""\b
Examples:
  flowforge density runs/moons points.csv -o logp.csv
  flowforge density runs/moons points.npy            # prints to stdout
  flowforge density runs/digits images/ -o scores.csv   # image runs: bits/dim per image
  flowforge density runs/sbi sims.csv -o logp.csv       # a conditional run: log p(x | c), the training layout
  flowforge density runs/moons-cond points.csv --context 1   # one condition for every row
""")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("points", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="output file, .csv or .npy (default: print)")
@FORCE_OUTPUT_OPTION
@CONTEXT_OPTIONS
@DEVICE_OPTION
@MAX_PARAMS_OPTION
def density(run: Path, points: Path, output: Path | None, device: str, dtype: str | None, max_params: int,
            context_text: str | None = None, context_file: Path | None = None, force: bool = False) -> None:
    """log p(x) of each point (data units), one value per row: finite, or -inf where the flow gives
    no finite density (values beyond float32, say). For an image run, the bits/dim of each image
    of a folder of PNGs (every one, in file-name order as strings: 10.png before 2.png), of
    MNIST-style IDX files (the test images)
    or of an (N, C, H, W) .npy array: high values are unusual images.

    A conditional run scores log p(x | c): the file is laid out as its training table (the context
    columns by header name or position; a label run: a 'label' column), or the points' condition
    comes from --context (every row) or --context-file (one per row)."""
    import numpy as np

    from flowforge.data import write_table

    flow, config, raw, spec = _load(run, max_params, device, dtype)
    if output is not None:
        refuse_to_replace((output,), force, inputs=(run, points, context_file), kept=_kept_files(run, raw))
    conditional = raw.get("context") is not None and context_text is None and context_file is None
    _, conditions = (None, None) if conditional else _run_conditions(run, raw, context_text, context_file,
                                                                     _numpy_dtype(flow))
    if spec.images:
        values, name = _image_scores(run, flow, points, config, raw, conditions), "bits_per_dim"
    else:
        if conditional:  # float32 overflow is the evaluator's to score (-inf)
            table, conditions = _conditioned_rows(run, points, raw, int(raw["dim"]), np.float64, "or give --context",
                                                  _numpy_dtype(flow))
        else:
            table = _table_of(run, points, raw)
        from flowforge.training import log_prob

        values = log_prob(flow, table, context=_per_row(conditions, len(table), points))
        values, name = values.numpy().astype(np.float64), "log_prob"
    digits = _digits(flow)
    if output is None:
        click.echo("\n".join(digits % v for v in values))
    else:
        write_table(output, values, header=name, fmt=digits)  # .npy: shape (N,), as log_prob returns
        click.echo(f"wrote {len(values)} {'scores' if spec.images else 'log-densities'} to {output}")


def _table_of(run: Path, points: Path, raw: dict):
    """A file of points to score (float64: overflow beyond float32 is the evaluator's to report)."""
    import numpy as np

    from flowforge.data import read_table

    from flowforge.data.context import LABEL, ContextInfo

    table, dim = read_table(points, dtype=np.float64), int(raw["dim"])
    if table.shape[1] != dim:
        info = ContextInfo.from_dict(raw.get("context"), str(run / "config.json"))
        width = 0 if info is None else 1 if info.kind == LABEL else info.dim  # the run's file layout: x and c
        hint = (f"; it already holds the {width} context column{'s' if width > 1 else ''}, so drop "
                "--context/--context-file" if width and table.shape[1] == dim + width else "")
        raise FlowforgeError(f"{points} has {table.shape[1]} columns but the model in {run} expects {dim}{hint}")
    return _in_run_order(table, points, raw)


def _in_run_order(table, path: Path, raw: dict):
    """Points of an unconditional run read from a file: a CSV's columns matched to the run's by
    header name (a table's header travels with its run), else taken by position."""
    from flowforge.data import table_columns
    from flowforge.data.context import columns_by_name

    recorded = raw.get("columns")
    if path.suffix.lower() != ".csv" or table.ndim != 2 or not isinstance(recorded, list) \
            or len(recorded) != table.shape[1]:
        return table
    return columns_by_name(table, table_columns(path, table.shape[1]), [str(c) for c in recorded], str(path))


def _per_row(conditions, rows: int, points: Path):
    """The conditions of ``rows`` points: one for all, or one per row (their counts must match)."""
    import numpy as np

    if conditions is None or len(conditions) == rows:
        return conditions
    if len(conditions) == 1:
        return np.repeat(conditions, rows, axis=0)
    raise FlowforgeError(f"--context-file holds {len(conditions)} conditions but {points} holds {rows} points")


def _image_scores(run: Path, flow, points: Path, config: TrainConfig, raw: dict, conditions=None):
    """Bits/dim of each image in ``points`` (a directory of images, or a .npy array of them)."""
    import numpy as np

    from flowforge.data.images import check_pixels
    from flowforge.distributions.dequantization import nats_to_bits_per_dim
    from flowforge.training.evaluate import discrete_log_prob
    from flowforge.training.run import data_shape

    if raw.get("context") is not None and conditions is None:
        raise FlowforgeError(f"{run} is conditional: give the images' class with --context (or --context-file)")
    if points.is_dir():
        _, images, _ = _points_for(run, str(points), None, data_shape(raw), config.unconditional(), raw)
    else:
        from flowforge.data.files import read_array

        images = read_array(points)
    shape = data_shape(raw)
    if tuple(images.shape[1:]) != tuple(shape):
        raise FlowforgeError(f"{points} holds images of shape {tuple(images.shape[1:])} but the model in {run} "
                             f"expects {tuple(shape)}")
    check_pixels(images, points)
    nll = -discrete_log_prob(flow, images, context=_per_row(conditions, len(images), points)).numpy().astype(np.float64)
    return nats_to_bits_per_dim(nll, int(np.prod(shape)))


@cli.command(epilog="""\b
Example:
  flowforge plot runs/moons      # writes runs/moons/plots/*.png
""")
@click.argument("run", type=click.Path(path_type=Path))
@MAX_PARAMS_OPTION
def plot(run: Path, max_params: int) -> None:
    """Draw a run's figures into RUN/plots: for a run trained on 2-D data the chapter's 2×2 figure,
    the density heat map and the training curve (each family adds its own); for a run of
    `flowforge fit`, the target against the flow's density and draws (2-D) and the ELBO and ESS curves."""
    _, config, raw, _ = _load(run, max_params)  # refuse an untrusted run before drawing anything
    if _fitted_to_target(raw, run):  # flowforge.variational.figures
        return _variational().plot_and_list(run)
    instead = "the other figures draw the flow beside it: put it back there for them"
    try:
        _check_training_data(run, raw, config, instead)
        if config.data_dir and not Path(config.data_dir).is_dir():  # MNIST's folder
            raise FlowforgeError(f"{config.data_dir}: no such folder (the data {run} was trained on; {instead})")
    except FlowforgeError as gone:  # the training curve needs no data
        warn(f"{gone}: drew the training curve only")
        return _plot(run, with_data=False)
    _plot(run)


def _fitted_to_target(raw: dict, run: Path) -> bool:
    """Whether a run is of `flowforge fit` (a flow fitted to a target; its config's section checked)."""
    from flowforge.variational.fitting import variational_section

    return variational_section(raw, str(run / "config.json")) is not None


def _variational():
    from flowforge.variational import report

    return report


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


def _report(message: str, final: bool = True) -> None:
    """One line, from rank 0 only when several processes share a run; a ``final`` one (why the
    command stopped) is marked for a --nproc launcher, which then adds no line of its own."""
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"flowforge: {message}", err=True)
        if final and os.environ.get(REPORTED_FILE):
            Path(os.environ[REPORTED_FILE]).touch()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Any warning (flowforge's, numpy's, torch's) as one line in flowforge's words."""
    text = " ".join(str(message).split()) or category.__name__
    origin = "" if issubclass(category, FlowforgeWarning) else f" ({category.__name__})"
    _report(f"warning: {text[:300]}{origin}", final=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per error, never a traceback (set FLOWFORGE_DEBUG=1 to see one)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()  # a convolutional flow's batches reuse the heap's pages (training/memory.py)
    with warnings.catch_warnings():  # Python's filters stay: each warning once, deprecations hidden
        warnings.showwarning = _show_warning
        return contextvars.copy_context().run(_main, argv)  # --max-params stays within this call


def _main(argv: list[str]) -> int:
    try:
        cli.main(args=argv, prog_name="flowforge", standalone_mode=False, obj={"argv": argv})
        return 0
    except SystemExit as done:  # the exit status of a torchrun launch
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        _report(f"error: {done.code}")  # sys.exit("message"), from code flowforge ran for the user
        return 1
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.Abort:
        from flowforge.training.distributed import launched_by_torchrun

        if not launched_by_torchrun():  # a torchrun worker stays quiet: its launcher says "interrupted"
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
