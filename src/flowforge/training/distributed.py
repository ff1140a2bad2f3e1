"""Data-parallel training through torch.distributed, launched by torchrun.

Every rank draws the same global batch indices from the shared seeded generator and keeps
its own slice, and DistributedDataParallel averages the gradients, so N processes take the
same steps as one process with the same global batch. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from flowforge.errors import REPORTED_FILE


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (the global batch size must divide)."""
        per_rank = batch.shape[0] // self.world_size
        return batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over ranks (itself when not distributed)."""
        if not self.active:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun prepared, a no-op otherwise: on GPUs (``device`` cuda, or
    auto where CUDA is available) nccl, each process on the GPU of its local rank; gloo on CPUs."""
    if not launched_by_torchrun():
        return Context()
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())  # "cuda" now means this rank's GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Context(dist.get_rank(), dist.get_world_size())


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def teardown(context: Context) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run ``flowforge <argv>`` in ``nproc`` local processes with torchrun; return the exit status.

    torchrun runs in this process so its own logs stay quiet: each worker reports its errors
    (rank 0 only), and a failure it did not report is summed up here in one line.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    for name in list(logging.root.manager.loggerDict):  # torchrun's own loggers set their levels themselves
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--no-python", sys.executable, "-m", "flowforge", *argv])
    with tempfile.TemporaryDirectory(prefix="flowforge-launch-") as folder:
        marker = Path(folder) / "reported"
        os.environ[REPORTED_FILE] = str(marker)
        try:
            run(args)
            return 0
        except SignalException:  # Ctrl-C or SIGTERM to the launcher: torchrun has stopped the workers
            print("flowforge: interrupted (the run keeps its last checkpoint; train --resume goes on from it)",
                  file=sys.stderr)
            return 130
        except ChildFailedError as err:
            codes = {rank: failure.exitcode for rank, failure in err.failures.items()}
            rank, code = failure_to_name(codes)
            # rank 0 reports its own errors (and marks that it did: torchrun may SIGTERM it just after)
            if not (marker.exists() or codes.get(0, 0) > 0):
                how = f"was killed by signal {-code}" if code < 0 else f"failed (exit code {code})"
                print(f"flowforge: error: training process {rank} {how} (the run keeps its last checkpoint; train "
                      "--resume goes on from it)", file=sys.stderr)
            return code if code > 0 else 1
        finally:
            os.environ.pop(REPORTED_FILE, None)


def failure_to_name(codes: dict[int, int]) -> tuple[int, int]:
    """The (rank, exit code) that says why a launch failed, of each failed rank's code (−N: killed by
    signal N): a kill other than torchrun's SIGTERM of the survivors, else an error exit, else the first."""
    ranks = sorted(codes)
    for rank in ranks:
        if codes[rank] < 0 and codes[rank] != -signal.SIGTERM:
            return rank, codes[rank]
    for rank in ranks:
        if codes[rank] > 0:
            return rank, codes[rank]
    return ranks[0], codes[ranks[0]]
