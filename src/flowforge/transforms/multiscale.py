"""The multi-scale split (RealNVP, Glow): factor out half the channels, keep transforming the rest.

Glow gives the factored-out half z a learned Gaussian prior conditioned on the kept half h,
N(μ(h), σ(h)²). Written as a change of variables to ε = (z − μ(h)) / σ(h) it becomes a layer
like any other, and a standard normal base on ε gives the prior's density exactly:

    log N(ε; 0, I) − Σ log σ(h) = log N(z; μ(h), σ(h)²)

so ``Flow.log_prob`` counts every split's prior term, and ``sample(temperature=T)`` draws
z = μ(h) + T·σ(h)·ε as Glow does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.nets import with_context_channels, zero_conv
from flowforge.transforms.base import Transform, check_context


class Split(Transform):
    """Keep the first ⌈C/2⌉ channels h (passed on through ``inner``), factor out the rest z.

        forward: (h, z) ↦ (inner(h), (z − μ(h)) / σ(h)),   log|det J| = log|det J_inner(h)| − Σ log σ(h)

    μ and log σ come from a zero-initialised 3×3 convolution of h (the prior starts as N(0, I)),
    which with ``context_dim`` > 0 also sees the context as constant channels (a class-conditional
    prior). With ``learned_prior=False`` z passes unchanged, RealNVP's factoring (prior N(0, I)).
    The context is passed on to ``inner``.
    The output keeps the input's shape, so a multi-scale flow returns z shaped like x.

    Dinh et al. 2017, "Density estimation using Real NVP", arXiv:1605.08803; Kingma & Dhariwal 2018,
    "Glow", arXiv:1807.03039.

    >>> import torch
    >>> from flowforge.transforms import ActNorm, Split
    >>> split = Split(4, inner=ActNorm(2))
    >>> split(torch.randn(3, 4, 2, 2))[0].shape
    torch.Size([3, 4, 2, 2])
    """

    def __init__(self, channels: int, inner: Transform | None = None, learned_prior: bool = True,
                 context_dim: int = 0):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a split needs at least 2 channels, got {channels}")
        self.sizes = (channels - channels // 2, channels // 2)
        self.inner = inner
        self.context_dim = context_dim if learned_prior else 0
        self.prior = zero_conv(self.sizes[0] + self.context_dim, 2 * self.sizes[1]) if learned_prior else None

    def _mean_log_std(self, kept: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        context = check_context(context, self.context_dim, kept.shape[0], "Split")
        return self.prior(with_context_channels(kept, context)).chunk(2, dim=1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        kept, out = x.split(self.sizes, dim=1)
        log_abs_det = x.new_zeros(x.shape[0])
        if self.prior is not None:
            mean, log_std = self._mean_log_std(kept, context)
            out = (out - mean) * (-log_std).exp()
            log_abs_det = log_abs_det - log_std.flatten(1).sum(1)
        if self.inner is not None:
            kept, inner_log_abs_det = self.inner(kept, context)
            log_abs_det = log_abs_det + inner_log_abs_det
        return torch.cat([kept, out], dim=1), log_abs_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        kept, out = y.split(self.sizes, dim=1)
        log_abs_det = y.new_zeros(y.shape[0])
        if self.inner is not None:
            kept, log_abs_det = self.inner.inverse(kept, context)
        if self.prior is not None:
            mean, log_std = self._mean_log_std(kept, context)
            out = out * log_std.exp() + mean
            log_abs_det = log_abs_det + log_std.flatten(1).sum(1)
        return torch.cat([kept, out], dim=1), log_abs_det
