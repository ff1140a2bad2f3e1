"""Run directories: what marks one as flowforge's, what flowforge may replace in it, and its lock.

* ``config.json`` carries a ``"flowforge"`` key (the marker) and ``manifest.json`` lists the files
  flowforge wrote there. ``--force`` deletes only those files, and only in a directory that is a run;
  anything else in it (the user's notes, data, code) is left alone.
* A fresh run goes only into a new or empty directory, or one that holds a run (with ``--force``).
* ``.flowforge.lock`` holds an advisory ``flock`` and the holder's PID while a process writes the run.
  The kernel drops the lock when its process dies, so a lock file left by a killed run (a stale one,
  its PID no longer running) is simply taken over.
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path
from typing import Iterator

from flowforge.atomic import TEMPORARY_MARK, remove_leftover_temporaries
from flowforge.errors import FlowforgeError, warn
from flowforge.training.checkpoint import (BEST_WEIGHTS, CONFIG, LAST_CHECKPOINT, METRICS, RESULTS, read_json,
                                           write_json)

MARKER = "flowforge"  # the key flowforge writes into every config.json it makes
MANIFEST = "manifest.json"
LOCK = ".flowforge.lock"
RUN_FILES = (CONFIG, METRICS, RESULTS, BEST_WEIGHTS, LAST_CHECKPOINT, MANIFEST)
_HELD: dict[Path, int] = {}  # run directories this process has locked → nesting depth


def is_flowforge_config(raw: dict) -> bool:
    """A config.json flowforge wrote: it has the marker, or (runs from before the marker) a train
    section and the versions record naming flowforge."""
    if isinstance(raw.get(MARKER), dict):
        return True
    versions = raw.get("versions")
    return isinstance(raw.get("train"), dict) and isinstance(versions, dict) and MARKER in versions


def _user_entries(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` other than flowforge's lock and temporary files."""
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK and TEMPORARY_MARK not in p.name)


def no_run_directory(run_dir: Path, purpose: str = "") -> FlowforgeError:
    """The one line for a run path that is no directory (a file given as a run, or nothing there),
    with what it was wanted for (``purpose``: "to resume", say)."""
    what = "a file, not a run directory" if run_dir.exists() else "no such run directory"
    return FlowforgeError(f"{run_dir}: {what}{' ' + purpose if purpose else ''}")


def check_run_target(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse a ``--out`` (or ``--resume``) directory flowforge must not write into; changes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FlowforgeError(f"{run_dir}: exists and is not a directory")
    entries = _user_entries(run_dir) if run_dir.is_dir() else []
    if resume:
        if not run_dir.is_dir():
            raise no_run_directory(run_dir)
        if not is_flowforge_config(read_json(run_dir / CONFIG)):
            raise FlowforgeError(f"{run_dir / CONFIG}: not written by flowforge; nothing to resume")
        return
    if not entries:
        return
    if CONFIG not in entries:
        raise FlowforgeError(f"{run_dir} is not empty and holds no flowforge run; "
                             "choose a new or empty directory for --out")
    try:
        ours = is_flowforge_config(read_json(run_dir / CONFIG))
    except FlowforgeError:
        ours = False
    if not ours:
        raise FlowforgeError(f"{run_dir} is not a flowforge run directory (its config.json was not written "
                             "by flowforge); nothing there is replaced, even with --force; choose another --out")
    if not force:
        raise FlowforgeError(f"{run_dir} already holds a run; pass --resume to continue it or --force to start over (resume=True, force=True in Python)")


def flowforge_files(run_dir: Path) -> list[Path]:
    """The files flowforge wrote in a run: its fixed files and the figures its manifest lists."""
    names: list[str] = list(RUN_FILES)
    if (run_dir / MANIFEST).is_file():
        try:
            names += [n for n in read_json(run_dir / MANIFEST).get("files", [])
                      if isinstance(n, str) and n.startswith("plots/")]  # figures; nothing else is added
        except FlowforgeError:
            pass
    inside = run_dir.resolve()
    paths = {(run_dir / n) for n in names if (run_dir / n).resolve().parent.is_relative_to(inside)}
    return sorted(p for p in paths if p.is_file() and not p.is_symlink())


def clear_run(run_dir: Path) -> None:
    """Delete flowforge's own files of a run (results first, config last), and nothing else."""
    order = {RESULTS: 0, CONFIG: 2, MANIFEST: 3}
    for path in sorted(flowforge_files(run_dir), key=lambda p: order.get(p.name, 1)):
        path.unlink(missing_ok=True)
    plots = run_dir / "plots"
    if plots.is_dir() and not any(plots.iterdir()):
        plots.rmdir()


def warn_if_unfinished(run_dir: Path, what: str, command: str, steps: int | None = None) -> None:
    """A run without its results (stopped part-way, or still running) holds its best weights so far:
    said once, so that no figure of it passes for the finished run's (``what`` it is, a "training"
    or a "fit"; ``command`` finishes it)."""
    if not (run_dir / RESULTS).is_file():
        of = f", of {steps:,} steps" if steps is not None else ""
        warn(f"{run_dir}: its {what} has not finished (no {RESULTS}: stopped, or still running); these are its "
             f"best weights so far{of}; flowforge {command} --resume {run_dir} finishes it")


def figures_folder(run_dir: Path) -> Path:
    """``RUN/plots``, where a run's figures go: refused when it is a link or no folder, so that no
    figure replaces a file outside the run."""
    out = run_dir / "plots"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise FlowforgeError(f"{out} is {'a link' if out.is_symlink() else 'not a folder'}: flowforge writes a run's "
                             "figures only into a plots folder of its own; move it away")
    return out


def record_files(run_dir: Path, paths) -> None:
    """Add ``paths`` (files inside ``run_dir``) to the run's manifest of files flowforge wrote."""
    manifest = run_dir / MANIFEST
    listed = read_json(manifest).get("files", []) if manifest.is_file() else []
    added = [Path(os.path.relpath(Path(p).absolute(), run_dir.absolute())).as_posix() for p in paths]
    write_json(manifest, {"files": sorted(set(listed) | set(added))})


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return f"PID {text}" if text.isdigit() else "an unknown process"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def active_writer(run_dir: Path) -> str | None:
    """Who holds the run's lock now ("PID N"), or None when nobody does (the lock is only tried)."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)


def stale_lock_pid(run_dir: Path) -> int | None:
    """The PID a lock file records when that process is no longer running (a killed run's leftover)."""
    try:
        text = (run_dir / LOCK).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and not _pid_running(int(text)) else None


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock for the ``with`` block; a second process is refused with the holder's PID.

    Re-entrant within a process; released on any exit, exceptions included (and by the kernel if
    the process dies).
    """
    key = run_dir.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # a failed writer removed the directory it had made, as this one started
        raise FlowforgeError(f"{run_dir}: removed by another flowforge process meanwhile; run again") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise FlowforgeError(f"{run_dir} is in use by another flowforge process ({holder}); "
                             "wait for it to finish or stop it") from None
    stale = stale_lock_pid(run_dir)
    if stale is not None:
        warn(f"{run_dir}: took over the lock left by PID {stale}, which is no longer running")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = 1
        yield
    finally:
        _HELD.pop(key, None)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def claim_run_dir(run_dir: Path, *, resume: bool, force: bool) -> Iterator[None]:
    """Check ``run_dir`` may be written, create it, lock it and check again under the lock (another
    writer may have got there first); the lock is held for the ``with`` block. A new run (no run was
    there) that fails before its first checkpoint, so has nothing to resume, is cleared again under
    the lock, and a directory this call made is removed; a process refused the lock touches nothing."""
    check_run_target(run_dir, resume=resume, force=force)
    created = _make_directory(run_dir)
    with run_lock(run_dir):
        fresh = False
        try:
            check_run_target(run_dir, resume=resume, force=force)
            fresh = not resume and not (run_dir / CONFIG).exists()
            remove_leftover_temporaries(run_dir)
            if (run_dir / "plots").is_dir() and not (run_dir / "plots").is_symlink():
                remove_leftover_temporaries(run_dir / "plots")
            yield
        except BaseException:
            _undo_failed_claim(run_dir, fresh, created)
            raise


def _undo_failed_claim(run_dir: Path, fresh: bool, created: list[Path]) -> None:
    """Still under the lock (so no other writer is between): a new run that stopped before its
    first checkpoint is cleared, having nothing to resume, and the directories this call made, left
    empty, are removed (the run directory and any parents it needed)."""
    if fresh and not (run_dir / LAST_CHECKPOINT).is_file():
        clear_run(run_dir)
    if created and run_dir.is_dir() and not _user_entries(run_dir):
        (run_dir / LOCK).unlink(missing_ok=True)
        _remove_empty(created)


def _remove_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (deepest first) while each is empty; one that is not stays, with those above it."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def _make_directory(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` and any missing parents, one at a time; the directories this call made,
    deepest first (decided by the file system: a parent another process made meanwhile is not
    counted, and of two processes racing for one new run directory exactly one gets it)."""
    made: list[Path] = []
    for directory in reversed(list(takewhile(lambda d: not d.exists(), (run_dir, *run_dir.parents)))):
        try:
            directory.mkdir()
            made.insert(0, directory)
        except FileExistsError:
            if directory == run_dir:  # another process's new run: nothing here is this call's to undo
                return []
        except OSError as err:
            _remove_empty(made)
            raise FlowforgeError(f"{run_dir}: cannot be created ({err.strerror or err})") from None
    return made
