"""Write-then-rename: a file appears whole or not at all, whatever kills the writer."""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from flowforge.errors import FlowforgeError

TEMPORARY_MARK = ".flowforge-tmp-"  # in every temporary file's name, so leftovers can be told apart


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with a unique name (same suffix, so writers that pick
    a format by extension still work); on success it replaces ``path``, on failure it is removed.

    Two writers never share a temporary file, so neither can clobber the other's half-written one.

    >>> from flowforge.atomic import atomic_target
    >>> with atomic_target("/tmp/out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    """
    path = Path(path)
    mode = _mode_for(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}{TEMPORARY_MARK}", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # after writing (a writer may have replaced the file, and a read-only mode would stop it):
        # mkstemp's 0600 would take the file away from the user's group
        os.chmod(tmp, mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The permissions a plain write would give ``path``: those of the file it replaces, or 0666
    less the process's umask for a new one."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def refuse_to_replace(outputs: Iterable[Path], force: bool, inputs: Iterable[Path | None] = (),
                      kept: Iterable[Path] = ()) -> None:
    """Refuse, before any work, to write over a file of the user's: an input of the command, or one of
    ``kept`` (a run's own files and the data it was trained on), always; any other existing file
    unless ``force`` (``--force``); and an output whose folder does not exist."""
    sources = {Path(p).resolve() for p in inputs if p is not None and Path(p).exists()}
    keep = {Path(p).resolve() for p in kept if Path(p).exists()}
    for output in outputs:
        if output.resolve() in sources:
            raise FlowforgeError(f"{output}: is an input of this command; write the output to another file")
        if output.resolve() in keep:
            raise FlowforgeError(f"{output}: is the run's own file or the data it was trained on; write the "
                                 "output to another file")
        if output.is_dir():
            raise FlowforgeError(f"{output}: is a directory; give a file to write")
        if output.exists() and not force:
            raise FlowforgeError(f"{output}: exists; pass --force to replace it")
        if not output.parent.is_dir():  # said of the file asked for, before the work (not of a sibling, after)
            raise FlowforgeError(f"{output}: its folder {output.parent} does not exist")


def remove_leftover_temporaries(directory: Path) -> None:
    """Delete temporary files a killed writer left in ``directory`` (only names :func:`atomic_target` makes)."""
    for leftover in directory.glob(f".*{TEMPORARY_MARK}*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
