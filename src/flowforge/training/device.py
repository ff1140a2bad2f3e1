"""Which device and floating-point type a run uses."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from flowforge.errors import FlowforgeError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when one is available, else the CPU; ``cpu``, ``cuda``,
    ``cuda:N`` as asked, refused in one line when this machine has no such device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FlowforgeError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise FlowforgeError(f"--device {name!r}: flowforge runs on cpu or cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise FlowforgeError(f"--device {name}: this machine has no CUDA device (use --device cpu; "
                                 "device='cpu' in Python)")
        if (device.index or 0) >= count:
            raise FlowforgeError(f"--device {name}: this machine has {count} CUDA device(s)")
    return device


def resolve_dtype(name: str = "float32") -> torch.dtype:
    if name not in DTYPES:
        raise FlowforgeError(f"--dtype {name!r}: use {' or '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """A torch floating-point type as users write it ("float32", not "torch.float32")."""
    return str(dtype).removeprefix("torch.")


def flow_device(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where ``module``'s floating-point weights live, and their type (CPU float32 for none)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


@contextmanager
def forked_rng(device: torch.device | str) -> Iterator[None]:
    """torch's global generators, the CPU's and ``device``'s (an accelerator's), restored on exit:
    what runs inside draws from them without moving the caller's."""
    device = torch.device(device)
    if device.type == "cpu":
        indices = []
    else:
        indices = [device.index if device.index is not None else torch.get_device_module(device.type).current_device()]
    with torch.random.fork_rng(devices=indices, device_type=device.type if indices else None):
        yield


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU inside the block (restored to torch's default,
    off, after it: torch has no getter for the setting).

    Why: weights that only a penalty moves (the inputs of a ReLU unit that no longer fires, under
    the book recipe's L2) shrink geometrically into the subnormal range, and CPU arithmetic on
    subnormals is slow: the book recipe's RealNVP measured 517 ms a step after 2,344 steps against
    13 ms with them flushed (94,559 of 792,580 weights subnormal). A subnormal float32 is below
    1.2e-38, so flushing it changes no result that matters."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
