"""``flowforge fit``: fit a flow to an unnormalised density from the command line.

torch is imported inside the command, so ``flowforge --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

TARGET_HELP = ("gmm, moons, ring, banana, funnel (--dim, default 10), double-well (an even --dim, default 4) or "
               "path.py:function (your file; the function takes a (batch, D) tensor and returns (batch,) "
               "log-densities; give --dim)")


@click.command("fit", epilog="""\b
Examples:
  flowforge fit --target gmm --out runs/gmm
  flowforge fit --target funnel --dim 10 --model realnvp --out runs/funnel --steps 4000
  flowforge fit --target gmm --objective forward-kl --out runs/gmm-fkl
  flowforge fit --target my_posterior.py:log_prob --dim 5 --out runs/posterior
  flowforge fit --resume runs/gmm --steps 4000
  flowforge eval runs/gmm --json && flowforge sample runs/gmm -n 1000 -o draws.csv --resample
""")
@click.option("--target", default=None, help=TARGET_HELP)
@click.option("--dim", type=click.IntRange(1, 100_000), default=None, help="the target's dimension D")
@click.option("--model", type=click.Choice(["nsf", "realnvp", "maf"]), default="nsf", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="run directory to create")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), help="continue this run")
@click.option("--force", is_flag=True, help="replace a run already in --out")
@click.option("--steps", type=click.IntRange(1, 10_000_000), default=None, help="optimisation steps [default: 2000]")
@click.option("--objective", type=click.Choice(["forward-then-jeffreys", "forward-then-stl", "stl", "reverse-kl", "forward-kl",
                                                 "jeffreys"]),
              default="forward-then-jeffreys", show_default=True,
              help="forward KL by importance weights for the first tenth, then reverse- and forward-KL steps "
              "alternately; forward-then-stl: forward KL for a quarter, then the sticking-the-landing ELBO (it may "
              "let a mode go); or each alone (jeffreys: both on every step), or the plain ELBO")
@click.option("--draws", type=click.IntRange(2, 1_000_000), default=None, help="draws per step [default: 256]")
@click.option("--lr", type=click.FloatRange(0, 1, min_open=True), default=None, help="peak learning rate [default: 1e-3]")
@click.option("--layers", type=click.IntRange(1, 256), default=None, help="layers of the flow")
@click.option("--hidden", type=click.IntRange(1, 65_536), default=None, help="network width")
@click.option("--seed", type=click.IntRange(0, 2 ** 63 - 1), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda or cuda:N")
@click.option("--no-plots", is_flag=True, help="skip the figures")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.pass_context
def fit(ctx, target, dim, model, out, resume, force, steps, objective, draws, lr, layers, hidden, seed, device,
        no_plots, no_progress) -> None:
    """Fit a flow q to an unnormalised log-density log p̃(x) and report the ELBO, log Z ± its
    standard error, the ESS per draw and the Pareto k̂ of the importance weights. By default a
    tenth of the steps descend the forward KL by importance weights (q spreads over every mode),
    the rest alternate reverse-KL steps (q sharpens) and forward-KL ones (q keeps every mode). The target must be
    written in torch operations (the reverse KL differentiates it). Then `sample`, `eval` and `plot`
    the run; `--resume RUN --steps N` continues one (on another --device if given)."""
    from flowforge.cli_resume import given_on_command_line, refuse_changes_on_resume
    from flowforge.errors import FlowforgeError
    from flowforge.variational.fitting import fit_config, fit_run
    from flowforge.variational.report import eval_line
    from flowforge.variational.targets import absolute_target

    if (out is None) == (resume is None):
        raise click.UsageError("give --out for a new fit or --resume to continue one" + (", not both" if out else ""))
    if resume is not None:
        refuse_changes_on_resume(ctx, ("steps", "device", "no_plots", "no_progress"))
        given = given_on_command_line(ctx, "device")
        config, run_dir = _resumed_config(resume, steps, device if given else None), resume
    else:
        if target is None:
            raise click.UsageError("--target is required for a new fit")
        sizes = {k: v for k, v in (("num_layers", layers), ("hidden", hidden)) if v is not None}
        config, run_dir = fit_config(model, absolute_target(target), steps=steps, objective=objective, batch_size=draws, lr=lr,
                                     seed=seed, device=device, model_options=sizes), out
    if not no_plots:
        from flowforge.training.rundir import figures_folder

        figures_folder(run_dir)  # a plots link is refused before the fit, not after it
    try:
        results = fit_run(config, run_dir, dim=dim, resume=resume is not None, force=force,
                          progress_bar=not no_progress, plots=not no_plots)
    except ValueError as err:  # a model option the builder refuses
        if isinstance(err, FlowforgeError):
            raise
        raise FlowforgeError(f"cannot build model {config.model!r}: {err}") from None
    for path in results.get("figures", []):
        click.echo(f"wrote {path}")
    click.echo(eval_line(results) + f" · run: {run_dir}")


def _resumed_config(run_dir: Path, steps: int | None, device: str | None = None):
    from flowforge.errors import FlowforgeError
    from flowforge.cli_resume import recorded_config
    from flowforge.training.checkpoint import CONFIG
    from flowforge.training.config import TrainConfig
    from flowforge.variational.fitting import evaluation_interval, variational_section

    raw = recorded_config(run_dir)
    if variational_section(raw, str(run_dir / CONFIG)) is None:
        raise FlowforgeError(f"{run_dir} was trained on data, not fitted to a target; resume it with flowforge train")
    config = TrainConfig.from_dict(raw.get("train"), source=str(run_dir / CONFIG), version=raw.get("config_version", 1))
    if steps is not None:
        config.steps, config.eval_every = steps, evaluation_interval(steps)
    if device is not None:
        config.device = device
    return config
