"""Data-parallel training through torch.distributed, launched by torchrun.

Every rank draws the same global batch indices from the shared seeded generator and keeps
its own slice, and DistributedDataParallel averages the gradients, so N processes take the
same steps as one process with the same global batch. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
    (rank 0 only), and a failure elsewhere is summed up here in one line.
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
    try:
        run(args)
        return 0
    except SignalException:  # Ctrl-C or SIGTERM to the launcher: torchrun has stopped the workers
        print("flowforge: interrupted (the run keeps its last checkpoint; train --resume goes on from it)",
              file=sys.stderr)
        return 130
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        # rank 0 reports its own errors, but says nothing when another rank failed or a signal killed it
        if 0 not in err.failures or err.failures[0].exitcode < 0:
            rank, failure = (0, err.failures[0]) if 0 in err.failures else (rank, failure)
            how = f"was killed by signal {-failure.exitcode}" if failure.exitcode < 0 else \
                f"failed (exit code {failure.exitcode})"
            print(f"flowforge: error: training process {rank} {how} (the run keeps its last checkpoint; train "
                  "--resume goes on from it)", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
