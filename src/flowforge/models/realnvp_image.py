"""RealNVP's multi-scale architecture for images (Dinh et al., 2017).

    scale(C, H, W) = 3 × checkerboard coupling → squeeze → 3 × channel coupling
                     → factor out half (inner = scale(2C, H/2, W/2)) → unsqueeze
    last scale     = 4 × checkerboard coupling

Masks alternate between couplings. Each coupling is followed by :class:`ActNorm`, a
deterministic stand-in for the paper's batch normalisation. Factored-out halves go straight to
the N(0, I) base, as in the paper (no learned prior). ``forward(x)`` returns z shaped like x.
"""

from __future__ import annotations

from flowforge.models.image_flow import ImageFlow, image_shape_of, pixel_preprocessing
from flowforge.transforms import (ActNorm, Compose, MaskedCoupling, Split, Squeeze, Transform, Unsqueeze,
                                  channel_mask, checkerboard_mask)


def _coupled(mask, hidden: int, depth: int, context_dim: int) -> list[Transform]:
    return [MaskedCoupling(mask, hidden, depth, scale="tanh", context_dim=context_dim), ActNorm(mask.shape[0])]


def realnvp_scale(shape: tuple[int, int, int], scales: int, hidden: int, depth: int, context_dim: int = 0) -> Compose:
    """``scales`` nested RealNVP scales on (C, H, W) inputs; returns a transform that keeps the shape."""
    channels, height, width = shape
    size = (hidden, depth, context_dim)
    if scales == 1:
        return Compose([layer for i in range(4) for layer in _coupled(checkerboard_mask(shape, i), *size)])
    squeezed = (4 * channels, height // 2, width // 2)
    layers = [layer for i in range(3) for layer in _coupled(checkerboard_mask(shape, i), *size)]
    layers.append(Squeeze())
    layers += [layer for i in range(3) for layer in _coupled(channel_mask(squeezed, i), *size)]
    kept = squeezed[0] - squeezed[0] // 2
    inner = realnvp_scale((kept, *squeezed[1:]), scales - 1, *size)
    layers += [Split(squeezed[0], inner, learned_prior=False), Unsqueeze()]
    return Compose(layers)


def RealNVPImage(image_shape: tuple[int, int, int], scales: int = 2, hidden: int = 64, depth: int = 2,
                 bits: int = 8, logit: float | None = 0.05,
                 context_dim: int = 0) -> ImageFlow:
    """RealNVP on (C, H, W) images with ``scales`` scales; couplings use a CNN with ``depth`` hidden
    convolutions of ``hidden`` channels. Pixels (at ``bits`` bits) go through a logit with
    α = ``logit`` (the paper's 0.05), or are centred with ``logit=None``. H and W must be divisible
    by 2^(scales − 1). With ``context_dim`` > 0 every coupling network sees a context.

    Dinh et al. 2017, "Density estimation using Real NVP", arXiv:1605.08803.

    >>> import torch
    >>> from flowforge.models import RealNVPImage
    >>> flow = RealNVPImage((1, 8, 8), scales=2, hidden=8)
    >>> flow.forward(torch.rand(2, 1, 8, 8))[0].shape
    torch.Size([2, 1, 8, 8])
    """
    channels, height, width = image_shape_of(image_shape, "realnvp-image")
    if scales < 1:
        raise ValueError("realnvp-image needs scales >= 1")
    factor = 2 ** (scales - 1)
    if height % factor or width % factor:
        raise ValueError(f"realnvp-image with {scales} scales needs height and width divisible by {factor}, "
                         f"got {height}×{width}")
    if channels * height * width < 2:
        raise ValueError("realnvp-image needs at least 2 pixels")
    scales_transform = realnvp_scale((channels, height, width), scales, hidden, depth, context_dim)
    transform = Compose([pixel_preprocessing(logit), scales_transform])
    return ImageFlow(transform, (channels, height, width), bits)
