"""The command line keeps the C heap's freed pages for reuse (training/memory.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from flowforge import cli
from flowforge.training import memory

# Four 12 MB blocks malloc'd, touched and freed, as a convolutional flow's activations at every
# batch (through the C library itself: torch's small allocations between them make glibc's trimming
# depend on where they land); the minor page faults of 40 such batches after two of warm-up
BATCHES = """
import ctypes, resource, sys
from flowforge.training.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL("libc.so.6")
libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, so the faults count pages on any kernel setting
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 12 * 2**20
def batch():
    blocks = [libc.malloc(SIZE) for _ in range(4)]
    for block in blocks:
        ctypes.memset(block, 1, SIZE)
    for block in blocks:
        libc.free(block)
batch(); batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    batch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_OF_ONE_BATCH = 4 * 12 * 2**20 // 4096
GLIBC = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")


def _faults(mode: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k not in memory.USER_SETTINGS}
    done = subprocess.run([sys.executable, "-c", BATCHES, mode], capture_output=True, text=True, check=True,
                          env={**environment, "OMP_NUM_THREADS": "1", **env})
    applied, faults = done.stdout.split()
    return applied, int(faults)


@GLIBC
def test_freed_blocks_are_reused_without_new_page_faults():
    # eval of a Glow on MNIST spent 8.9 s of 19.4 s in the kernel: glibc handed freed activations back
    # and faulted fresh pages in at every batch
    applied, faults = _faults("none")  # glibc's default: nearly every page of every batch anew
    assert applied == "None" and faults > 30 * PAGES_OF_ONE_BATCH
    applied, faults = _faults("keep")
    assert applied == "True" and faults < PAGES_OF_ONE_BATCH // 2


@GLIBC
def test_the_users_own_malloc_settings_are_left_alone():
    applied, _ = _faults("keep", MALLOC_TOP_PAD_="0")
    assert applied == "False"


def test_the_command_line_applies_it(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["--version"]) == 0
    assert calls == [1]
