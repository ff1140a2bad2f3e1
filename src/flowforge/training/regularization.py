"""Weight penalties added to the training loss.

Keras's ``kernel_regularizer=regularizers.l2(λ)``, which the book's RealNVP puts on every dense
layer, adds λ · Σ w² over the layers' kernels (weight matrices, not biases) to the loss:

    loss = −mean log p(x) + λ · Σ_kernels Σ w²

Unlike decoupled weight decay (AdamW's ``weight_decay``), the penalty's gradient 2λw passes
through Adam's per-parameter scaling (Loshchilov & Hutter 2019, "Decoupled Weight Decay
Regularization", arXiv:1711.05101, on why the two differ).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def kernels(module: nn.Module) -> list[Tensor]:
    """The weight matrices (and convolution kernels) of ``module``: parameters named ``weight``
    with two or more dimensions; biases, scales and other vectors are left out.

    >>> from torch import nn
    >>> from flowforge.training.regularization import kernels
    >>> [tuple(w.shape) for w in kernels(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))]
    [(4, 3), (2, 4)]
    """
    return [p for name, p in module.named_parameters() if name.rsplit(".", 1)[-1] == "weight" and p.dim() >= 2]


def l2_penalty(module: nn.Module, strength: float) -> Tensor:
    """``strength`` · Σ w² over the kernels of ``module`` (Keras's ``l2`` kernel regulariser).

    >>> from torch import nn
    >>> from flowforge.training.regularization import l2_penalty
    >>> layer = nn.Linear(2, 1); _ = nn.init.constant_(layer.weight, 3.0)
    >>> round(l2_penalty(layer, 0.01).item(), 6)   # 0.01 · (3² + 3²)
    0.18
    """
    weights = kernels(module)
    if not weights:
        return torch.zeros(())
    return strength * torch.stack([w.square().sum() for w in weights]).sum()
