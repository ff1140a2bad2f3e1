"""Write-then-rename: a file appears whole or not at all, whatever kills the writer."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by
    extension still work); on success it replaces ``path``, on failure it is removed.

    >>> with atomic_target("/tmp/out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
