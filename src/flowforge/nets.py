"""Small neural networks used inside transforms."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def mlp(in_features: int, out_features: int, hidden: int, depth: int,
        activation: str = "relu", zero_last: bool = True) -> nn.Sequential:
    """`depth` hidden layers of width `hidden`: in → hidden → … → hidden → out.

    With ``zero_last`` the output layer starts at zero, so a coupling built on it
    starts as the identity map (a stable start for deep flows).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    if depth < 1 or hidden < 1:
        raise ValueError("an MLP needs depth >= 1 and hidden >= 1")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
        width = hidden
    last = nn.Linear(width, out_features)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


@functools.cache
def native_bf16() -> bool:
    """Whether bf16 matrix products run natively here (a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX), where they take about half the time of float32 ones."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(choice: bool | str) -> bool:
    if choice == "auto":
        return native_bf16()
    if isinstance(choice, bool):
        return choice
    raise ValueError(f"mixed_precision must be True, False or 'auto', not {choice!r}")
