"""Write-then-rename: a file appears whole or not at all, whatever kills the writer."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMPORARY_MARK = ".flowforge-tmp-"  # in every temporary file's name, so leftovers can be told apart


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with a unique name (same suffix, so writers that pick
    a format by extension still work); on success it replaces ``path``, on failure it is removed.

    Two writers never share a temporary file, so neither can clobber the other's half-written one.

    >>> with atomic_target("/tmp/out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}{TEMPORARY_MARK}", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_leftover_temporaries(directory: Path) -> None:
    """Delete temporary files a killed writer left in ``directory`` (only names :func:`atomic_target` makes)."""
    for leftover in directory.glob(f".*{TEMPORARY_MARK}*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
