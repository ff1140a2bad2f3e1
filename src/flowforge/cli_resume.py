"""What a command may change when it continues a run (``--resume``): the run keeps the options it
was started with, so an option given for something else is refused rather than silently ignored."""

from __future__ import annotations

from pathlib import Path

import click


def given_on_command_line(ctx: click.Context, name: str) -> bool:
    """Whether the option ``name`` was typed on the command line (not left at its default)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def refuse_changes_on_resume(ctx: click.Context, allowed: tuple[str, ...]) -> None:
    """Refuse (a usage error, exit 2) any option given on the command line besides ``resume`` and
    ``allowed``: it would be ignored, since a resumed run rebuilds itself from its config.json."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}
    changed = [flags[name] for name in ctx.params if name not in (*allowed, "resume")
               and given_on_command_line(ctx, name)]
    if changed:
        kept = ", ".join(flags[name] for name in allowed)
        raise click.UsageError(f"{', '.join(changed)} cannot be given with --resume (the run keeps its recorded "
                               f"options, whatever they were; only {kept} may be given)")


def recorded_config(run_dir: Path) -> dict:
    """The config.json of the run to resume, refused in one line when there is no such directory."""
    from flowforge.training.checkpoint import CONFIG, read_json
    from flowforge.training.rundir import no_run_directory

    if not run_dir.is_dir():
        raise no_run_directory(run_dir, "to resume")
    return read_json(run_dir / CONFIG)
