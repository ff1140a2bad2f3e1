"""Element-wise invertible maps whose parameters a coupling's conditioner predicts.

Each map y_i = h(x_i; θ_i) is strictly monotone in x_i, so the Jacobian of a coupling built
on it is triangular and log|det J| = Σ_i log|∂h/∂x_i|. For x of shape ``(batch, k, *rest)``, ``params`` has shape
``(batch, P·k, *rest)``: ``P = params_per_element`` blocks of k along dim 1, block p holding
parameter p of every element (the layout a network's output has, so no reshaping is needed).
Adding a map is one class here (``forward``, ``inverse``, ``params_per_element``) and one line
in the shared transform test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCALES = ("tanh", "sigmoid", "additive")


def log_scale(raw: Tensor, kind: str, bound: float = 1.0) -> Tensor:
    """log s from the network's raw output.

    "tanh": log s = bound · tanh(raw / bound), s ∈ (e^−bound, e^bound) with slope 1 at 0 (bound 1:
    the book's scale in (1/e, e)); "sigmoid": s = sigmoid(raw + 2) ∈ (0, 1), Glow's choice (starts at
    0.88, never expands); "additive": s = 1 (NICE).

    >>> import torch
    >>> from flowforge.transforms.elementwise import log_scale
    >>> log_scale(torch.tensor([0.0]), "tanh"), log_scale(torch.tensor([0.0]), "additive")
    (tensor([0.]), tensor([0.]))
    """
    if kind == "tanh":
        return torch.tanh(raw) if bound == 1.0 else bound * torch.tanh(raw / bound)
    if kind == "sigmoid":
        return F.logsigmoid(raw + 2.0)
    if kind == "additive":
        return torch.zeros_like(raw)
    raise ValueError(f"unknown coupling scale {kind!r}; choose from {', '.join(SCALES)}")


class ElementwiseMap(nn.Module):
    """The interface: ``forward(x, params) -> (y, log|∂y/∂x|)`` and ``inverse(y, params) -> (x, log|∂x/∂y|)``,
    both log-derivatives element-wise (shaped like x)."""

    params_per_element: int = 0

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


class Affine(ElementwiseMap):
    """y = x · s + t with log s = bound(raw) (see :func:`log_scale`); params are (raw, t).

    RealNVP (Dinh et al. 2017, "Density estimation using Real NVP", arXiv:1605.08803) with the
    book's tanh-bounded scale; Glow (arXiv:1807.03039) with ``scale="sigmoid"``. ``bound`` widens
    the tanh bound: log s = bound · tanh(raw / bound), so s ∈ (e^−bound, e^bound) with the same
    slope at 0 (a MAF on peaked conditionals needs more than a factor e per layer).

    >>> import torch
    >>> from flowforge.transforms import Affine
    >>> y, log_der = Affine()(torch.ones(1, 2), torch.tensor([[0.0, 0.0, 1.0, 2.0]]))
    >>> y, log_der
    (tensor([[2., 3.]]), tensor([[0., 0.]]))
    """

    params_per_element = 2

    def __init__(self, scale: str = "tanh", bound: float = 1.0):
        super().__init__()
        if scale not in ("tanh", "sigmoid"):
            raise ValueError(f"unknown affine scale {scale!r}; choose tanh or sigmoid (or the Additive map)")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound < math.inf:
            raise ValueError(f"the affine scale bound (scale_bound) must be a positive finite number, got {bound!r}")
        if bound != 1.0 and scale != "tanh":
            raise ValueError(f"the affine scale bound (scale_bound) only widens the tanh scale, not {scale!r}")
        self.scale, self.bound = scale, float(bound)

    def _log_s_shift(self, params: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = params.chunk(2, dim=1)
        return log_scale(raw, self.scale, self.bound), shift

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_s, shift = self._log_s_shift(params)
        return x * log_s.exp() + shift, log_s

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_s, shift = self._log_s_shift(params)
        return (y - shift) * (-log_s).exp(), -log_s


class Additive(ElementwiseMap):
    """y = x + t, volume preserving (NICE: Dinh et al. 2014, arXiv:1410.8516); the param is t.

    >>> import torch
    >>> from flowforge.transforms import Additive
    >>> Additive()(torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]))[0]
    tensor([[ 1., -1.]])
    """

    params_per_element = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params, torch.zeros_like(x)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params, torch.zeros_like(y)


def affine_or_additive(scale: str, bound: float = 1.0) -> ElementwiseMap:
    """The map a coupling's ``scale`` names: :class:`Additive` for "additive", else :class:`Affine`
    (with ``bound`` on a tanh scale)."""
    if scale not in SCALES:
        raise ValueError(f"unknown coupling scale {scale!r}; choose from {', '.join(SCALES)}")
    if scale == "additive" and bound != 1.0:
        raise ValueError("the affine scale bound (scale_bound) only widens the tanh scale, not 'additive'")
    return Additive() if scale == "additive" else Affine(scale, bound)
