"""Small neural networks used inside transforms."""

from __future__ import annotations

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
