"""Helpers for the reliability tests: run the command line, check its one-line promise, and prove
that files on disk are unchanged (hashes before and after)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowforge.cli import main

SMALL = ["--layers", "2", "--hidden", "16", "--depth", "1", "--no-plots", "--no-progress"]


def file_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (a file root hashes itself), by path."""
    hashes = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for path in paths:
            hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``flowforge ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowforge", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def assert_one_line(err: str, kind: str = "error", *words: str) -> None:
    """stderr is exactly one flowforge line of ``kind`` (error or warning) containing ``words``."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flowforge: {kind}: "), err
    for word in words:
        assert word in lines[0], err


def refused(capsys, code: int, args: list, words: tuple[str, ...], *watched: Path) -> str:
    """Run a command that must be refused: exit ``code``, one error line with ``words``, and every
    file under ``watched`` unchanged (none added, none removed). Returns the line."""
    before = file_hashes(*watched)
    got, _, err = cli(capsys, *args)
    assert got == code, err
    assert_one_line(err, "error", *words)
    assert file_hashes(*watched) == before
    return err


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """A copy of the session's small trained run, free to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


# VmHWM, the process's own peak (ru_maxrss would carry the forking parent's peak across exec).
PEAK_RSS_PROBE = ("import sys\nfrom flowforge.cli import main\ncode = main(sys.argv[1:])\n"
                  "peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
                  "print(peak, file=sys.stderr)\nsys.exit(code)")


def measured_cli(*args, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``flowforge ARGS`` in a fresh process: (result with the probe's line removed from stderr,
    peak resident memory in MB, wall seconds)."""
    import time

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_PROBE, *map(str, args)], capture_output=True,
                            text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    *lines, peak_kb = result.stderr.splitlines()
    result.stderr = "".join(line + "\n" for line in lines)
    return result, int(peak_kb) / 1024, seconds
