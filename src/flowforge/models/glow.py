"""Glow (Kingma & Dhariwal, 2018): a multi-scale flow of ActNorm → 1×1 conv → coupling steps.

    level(C, H, W) = squeeze → K × [ActNorm → InvConv1x1 → coupling]
                     → split(inner = level(2C, H/2, W/2)) → unsqueeze

The last level has no split. Each split factors out half the channels under a learned prior
N(μ(h), σ(h)²) (see :class:`~flowforge.transforms.Split`); unsqueezing at the end of every level
puts the factored-out parts back where they came from, so ``forward(x)`` returns z shaped like x.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowforge.models.image_flow import ImageFlow, image_shape_of, pixel_preprocessing
from flowforge.transforms import (ActNorm, ChannelCoupling, Compose, InvConv1x1, Split, Squeeze, Transform,
                                  Unsqueeze)
from flowforge.transforms.elementwise import SCALES


@dataclass(frozen=True)
class StepOptions:
    """What every step of flow shares: the coupling CNN's size, its scale, the 1×1 convolutions'
    parametrisation and the context size (0: unconditional)."""
    hidden: int = 512
    depth: int = 2
    coupling: str = "tanh"
    lu: bool = True
    context_dim: int = 0


def flow_step(channels: int, options: StepOptions) -> Compose:
    """One step of flow: ActNorm → invertible 1×1 convolution → affine (or additive) coupling."""
    return Compose([ActNorm(channels), InvConv1x1(channels, lu=options.lu),
                    ChannelCoupling(channels, options.hidden, options.depth, scale=options.coupling,
                                    context_dim=options.context_dim)])


def glow_level(channels: int, levels: int, steps: int, options: StepOptions) -> Compose:
    """``levels`` nested scales on (channels, H, W) inputs; returns a transform that keeps the shape.
    The context, if any, reaches every coupling and every split's prior."""
    squeezed = 4 * channels
    layers: list[Transform] = [Squeeze()]
    layers += [flow_step(squeezed, options) for _ in range(steps)]
    if levels > 1:
        inner = glow_level(squeezed - squeezed // 2, levels - 1, steps, options)
        layers.append(Split(squeezed, inner, context_dim=options.context_dim))
    layers.append(Unsqueeze())
    return Compose(layers)


def Glow(image_shape: tuple[int, int, int], levels: int = 3, steps: int = 32, hidden: int = 512, depth: int = 2,
         coupling: str = "tanh", lu: bool = True, bits: int = 8, logit: float | None = None,
         context_dim: int = 0) -> ImageFlow:
    """Glow on (C, H, W) images: ``levels`` scales of ``steps`` flow steps each.

    Couplings use a CNN with ``depth`` hidden convolutions of ``hidden`` channels; ``coupling`` is
    the affine coupling's scale: "tanh" (s = exp(tanh(·)) ∈ (1/e, e), the default), "sigmoid" (the
    paper's s = sigmoid(· + 2); its inverse can overflow far from the data, e.g. at temperature 1)
    or "additive" (s = 1). ``lu`` parametrises the 1×1 convolutions by their LU factors. Pixels
    are modelled at ``bits`` bits (≤ 8) and centred to [−½, ½) before the flow, or mapped through
    a logit with ``logit=alpha``. H and W must be divisible by 2^levels. With ``context_dim`` > 0
    every coupling network and every split prior sees a context (a one-hot class, say), so the
    flow models p(x | c): class-conditional images.

    Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions", arXiv:1807.03039.

    >>> import torch
    >>> from flowforge.models import Glow
    >>> flow = Glow((1, 8, 8), levels=2, steps=2, hidden=16)
    >>> x = torch.rand(4, 1, 8, 8)
    >>> flow.forward(x)[0].shape, flow.log_prob(x).shape
    (torch.Size([4, 1, 8, 8]), torch.Size([4]))
    """
    channels, height, width = image_shape_of(image_shape, "glow")
    if levels < 1 or steps < 1:
        raise ValueError("glow needs levels >= 1 and steps >= 1")
    if coupling not in SCALES:
        raise ValueError(f"unknown coupling {coupling!r}; choose from {', '.join(SCALES)}")
    if height % 2 ** levels or width % 2 ** levels:
        raise ValueError(f"glow with {levels} levels needs height and width divisible by {2 ** levels}, "
                         f"got {height}×{width}")
    transform = Compose([pixel_preprocessing(logit),
                         glow_level(channels, levels, steps, StepOptions(hidden, depth, coupling, lu, context_dim))])
    return ImageFlow(transform, (channels, height, width), bits)
