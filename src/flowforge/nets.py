"""Small neural networks used inside transforms, and the conditioners couplings are built on.

A conditioner maps the part of the input a coupling passes through (plus an optional context)
to the parameters of the element-wise map applied to the rest: for a transformed part of shape
``(batch, k, *rest)``, a tensor ``(batch, params·k, *rest)`` whose p-th block of k along dim 1
holds parameter p of every element (so ``chunk(params, dim=1)`` gives one tensor per parameter).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from flowforge.checks import whole_number

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def mlp(in_features: int, out_features: int, hidden: int, depth: int,
        activation: str = "relu", zero_last: bool = True) -> nn.Sequential:
    """`depth` hidden layers of width `hidden`: in → hidden → … → hidden → out.

    With ``zero_last`` the output layer starts at zero, so a coupling built on it
    starts as the identity map (a stable start for deep flows).

    >>> import torch
    >>> from flowforge.nets import mlp
    >>> mlp(3, 2, hidden=8, depth=2)(torch.randn(4, 3)).abs().max().item()
    0.0
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    hidden, depth = whole_number(hidden, "hidden"), whole_number(depth, "depth")
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


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3×3 convolution whose weights and bias start at zero (its output starts at 0)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def coupling_cnn(in_channels: int, out_channels: int, hidden: int = 512, depth: int = 2) -> nn.Sequential:
    """Glow's coupling network: 3×3 conv → ReLU → (depth − 1) × [1×1 conv → ReLU] → zero-started 3×3 conv.

    >>> import torch
    >>> from flowforge.nets import coupling_cnn
    >>> coupling_cnn(2, 4, hidden=8)(torch.randn(1, 2, 6, 6)).abs().max().item()
    0.0
    """
    hidden, depth = whole_number(hidden, "hidden"), whole_number(depth, "depth")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
    layers.append(zero_conv(hidden, out_channels))
    return nn.Sequential(*layers)


def with_context_channels(x: Tensor, context: Tensor | None) -> Tensor:
    """Append a (B, K) context to (B, C, H, W) images as K constant channels: (B, C + K, H, W).

    >>> import torch
    >>> from flowforge.nets import with_context_channels
    >>> with_context_channels(torch.zeros(2, 1, 3, 3), torch.ones(2, 4)).shape
    torch.Size([2, 5, 3, 3])
    """
    if context is None:
        return x
    planes = context.to(x.dtype).view(*context.shape, 1, 1).expand(-1, -1, *x.shape[2:])
    return torch.cat([x, planes], dim=1)


class MLPConditioner(nn.Module):
    """An MLP from ``in_features`` (+ ``context_dim``) inputs to ``params`` values for each of
    ``out_features`` elements: output shape (batch, params · out_features).

    With ``mixed_precision`` the network runs in bfloat16 under autocast while the module trains
    (``module.train()``), and its output returns in the input's dtype; the map it parameterises is
    computed at that precision, so the coupling stays exactly invertible. In evaluation
    (``module.eval()``, as a loaded run is) it runs in the input's own dtype, so reported densities
    and draws are float32-exact and the same on every machine. The choice is a buffer, so it
    travels with the weights.

    >>> import torch
    >>> from flowforge.nets import MLPConditioner
    >>> MLPConditioner(2, 3, params=2, hidden=8, depth=1, context_dim=1)(torch.randn(5, 2), torch.randn(5, 1)).shape
    torch.Size([5, 6])
    """

    def __init__(self, in_features: int, out_features: int, params: int, hidden: int, depth: int,
                 activation: str = "relu", context_dim: int = 0, mixed_precision: bool = False):
        super().__init__()
        self.context_dim = context_dim = whole_number(context_dim, "context_dim", low=0)
        self.net = mlp(in_features + context_dim, params * out_features, hidden, depth, activation)
        self.register_buffer("bf16_network", torch.tensor(bool(mixed_precision)))
        self._bf16 = bool(mixed_precision)  # the buffer as a Python bool: no device sync per forward

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._bf16 = bool(self.bf16_network)

    def forward(self, given: Tensor, context: Tensor | None = None) -> Tensor:
        inputs = given if context is None else torch.cat([given, context.to(given.dtype)], dim=1)
        # bf16 for training steps only (its speed is worth a step's noise, not a reported density's
        # error: up to 1.8 nats at a point in 43-D), and only where the device multiplies it natively
        if self._bf16 and self.training and inputs.dtype == torch.float32 and native_bf16(inputs.device.type):
            with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
                h = self.net(inputs)
            return h.float()
        return self.net(inputs)


class SeparateMLPConditioner(nn.Module):
    """Two MLPs from the same ``in_features`` (+ ``context_dim``) inputs: one for the log-scale
    parameter, one for the shift, each ``out_features`` wide, output ``(raw, t)`` in the
    conditioners' layout (batch, 2 · out_features). The book's coupling (its ``s`` and ``t`` towers);
    the scale's bound (tanh) is the element-wise map's, as for :class:`MLPConditioner`.

    >>> import torch
    >>> from flowforge.nets import SeparateMLPConditioner
    >>> SeparateMLPConditioner(2, 3, hidden=8, depth=2)(torch.randn(5, 2)).shape
    torch.Size([5, 6])
    """

    def __init__(self, in_features: int, out_features: int, hidden: int, depth: int,
                 activation: str = "relu", context_dim: int = 0, mixed_precision: bool = False):
        super().__init__()
        self.context_dim = context_dim = whole_number(context_dim, "context_dim", low=0)
        self.scale_net = MLPConditioner(in_features, out_features, 1, hidden, depth, activation, context_dim,
                                        mixed_precision)
        self.shift_net = MLPConditioner(in_features, out_features, 1, hidden, depth, activation, context_dim,
                                        mixed_precision)

    def forward(self, given: Tensor, context: Tensor | None = None) -> Tensor:
        return torch.cat([self.scale_net(given, context), self.shift_net(given, context)], dim=1)


class CNNConditioner(nn.Module):
    """Glow's coupling CNN from ``in_channels`` (+ ``context_dim`` constant context channels) to
    ``params`` values for each pixel of ``out_channels`` channels: (batch, params · out_channels, H, W).

    >>> import torch
    >>> from flowforge.nets import CNNConditioner
    >>> CNNConditioner(2, 2, params=2, hidden=8, context_dim=3)(torch.randn(4, 2, 5, 5), torch.randn(4, 3)).shape
    torch.Size([4, 4, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, params: int, hidden: int, depth: int = 2,
                 context_dim: int = 0):
        super().__init__()
        self.context_dim = context_dim = whole_number(context_dim, "context_dim", low=0)
        self.net = coupling_cnn(in_channels + context_dim, params * out_channels, hidden, depth)

    def forward(self, given: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(with_context_channels(given, context))


@functools.cache
def native_bf16(device_type: str = "cpu") -> bool:
    """Whether bf16 matrix products run natively on this device type (a CUDA GPU with bf16, or a
    CPU with AVX512-BF16 or AMX), where they take about half the time of float32 ones."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in evaluation mode for the block, its own mode restored after: how every figure
    flowforge reports is computed (bf16 coupling networks in float32, so a density is the same on
    every machine; an ActNorm not yet initialised is left so by the points it scores)."""
    modes = {m: m.training for m in module.modules()}  # each its own: a submodule frozen in eval stays so
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


def resolve_mixed_precision(choice: bool | str) -> bool:
    """``True``/``False`` as given; ``"auto"``: True (the networks then run in bf16 on the devices
    that multiply it natively, float32 elsewhere: see :class:`MLPConditioner`)."""
    if choice == "auto":
        return True
    if isinstance(choice, bool):
        return choice
    raise ValueError(f"mixed_precision must be True, False or 'auto', not {choice!r}")


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary ``mask`` (out × in)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("weight_mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.weight_mask, self.bias)


def made_degrees(features: int, order: Tensor | list[int] | None) -> Tensor:
    """Degree 1…D of each input feature: its position in ``order`` (default 0, 1, …, D−1)."""
    order = torch.arange(features) if order is None else torch.as_tensor(order, dtype=torch.long)
    if sorted(order.tolist()) != list(range(features)):
        raise ValueError(f"an autoregressive order must be a permutation of 0..{features - 1}, got {order.tolist()}")
    degrees = torch.empty(features, dtype=torch.long)
    degrees[order] = torch.arange(1, features + 1)
    return degrees


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: ``params`` outputs per feature, where the
    outputs of feature i depend only on the features before it in ``order`` (and on the context).

        θ_i = NN(x_{<i}, c)    (Germain et al. 2015, "MADE: Masked Autoencoder for Distribution
        Estimation", arXiv:1502.03509)

    Hidden units get degrees 1…D−1 in turn; a unit of degree k sees inputs of degree ≤ k, an
    output of feature i sees hidden units of degree < deg(i); the context enters every hidden unit.
    The output layer starts at zero and has the conditioners' layout: ``params`` blocks of D along dim 1.

    >>> import torch
    >>> from flowforge.nets import MADE
    >>> made = MADE(3, params=2, hidden=16, depth=2)
    >>> made(torch.randn(4, 3)).shape
    torch.Size([4, 6])
    """

    def __init__(self, features: int, params: int, hidden: int = 64, depth: int = 2, context_dim: int = 0,
                 order: Tensor | list[int] | None = None, activation: str = "relu"):
        super().__init__()
        features = whole_number(features, "features")
        hidden, depth = whole_number(hidden, "hidden"), whole_number(depth, "depth")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        self.context_dim = context_dim = whole_number(context_dim, "context_dim", low=0)
        inputs = torch.cat([made_degrees(features, order), torch.zeros(context_dim, dtype=torch.long)])
        self.register_buffer("degrees", inputs[:features].clone())  # its own storage: safetensors saves no views
        # Degrees 1…D−1 in turn; with one feature, degree 0: units that see only the context.
        hidden_degrees = torch.arange(hidden) % max(1, features - 1) + min(1, features - 1)
        layers: list[nn.Module] = []
        previous = inputs
        for _ in range(depth):
            layers += [MaskedLinear(len(previous), hidden, hidden_degrees[:, None] >= previous[None, :]),
                       ACTIVATIONS[activation]()]
            previous = hidden_degrees
        outputs = self.degrees.repeat(params)
        last = MaskedLinear(hidden, len(outputs), outputs[:, None] > previous[None, :])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x if context is None else torch.cat([x, context.to(x.dtype)], dim=1))
