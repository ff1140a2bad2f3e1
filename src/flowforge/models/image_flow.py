"""A flow over images: a continuous density on pixels in [0, 1], trained on quantised images.

    log p(x) = log N(f(x); 0, I) + log|det J_f(x)|           x ∈ [0, 1]^(C×H×W), z = f(x) shaped like x
    log P(k) ≥ log p((k + u) / 2^bits) − D · log 2^bits       k quantised, u ~ U[0, 1)^D  (see distributions/dequantization.py)

``log_prob``, ``sample``, ``forward`` and ``inverse`` work in [0, 1] units (continuous pixels);
``discrete_log_prob`` and ``training_loss`` take images as stored (8-bit scale, 0…255) and
dequantise them, so the trainer's and the evaluator's NLL is the discrete one in nats per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.distributions.dequantization import bits_per_dim, check_bits, dequantize, log_bin_volume, quantize
from flowforge.distributions import Flow, StandardNormal
from flowforge.errors import FlowforgeError
from flowforge.transforms import Logit, Shift, Transform


def image_shape_of(shape: int | tuple[int, ...] | list[int], model: str) -> tuple[int, int, int]:
    """Validate a builder's first argument as (C, H, W); vector data get a clear refusal."""
    if isinstance(shape, int) or len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        what = f"vector data with {shape} features" if isinstance(shape, int) else f"shape {shape}"
        raise ValueError(f"{model} models images of shape (C, H, W), got {what}")
    return tuple(shape)


def pixel_preprocessing(logit: float | None) -> Transform:
    """[0, 1] pixels → the flow's working space: ``Logit(alpha)`` (RealNVP), or ``Shift(-0.5)`` (Glow) for None."""
    return Logit(logit) if logit is not None else Shift(-0.5)


class ImageFlow(Flow):
    """A :class:`Flow` over (C, H, W) images in [0, 1] with the trainer's dequantisation hooks.

    >>> import torch
    >>> from flowforge.models import Glow
    >>> flow = Glow((1, 8, 8), levels=2, steps=2, hidden=16, bits=4)
    >>> images = torch.randint(0, 256, (5, 1, 8, 8)).float()     # as stored: the 8-bit scale
    >>> flow.discrete_log_prob(images).shape, flow.sample(3, temperature=0.7).shape
    (torch.Size([5]), torch.Size([3, 1, 8, 8]))
    """

    def __init__(self, transform: Transform, image_shape: tuple[int, int, int], bits: int = 8):
        super().__init__(transform, StandardNormal(tuple(image_shape)))
        self.bits = check_bits(bits)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.base.event_shape)

    @property
    def dims(self) -> int:
        return self.base.event_dim

    def dequantize(self, images: Tensor, generator: torch.Generator | int | None = None) -> Tensor:
        """Stored images (8-bit scale) → continuous pixels (level + u) / 2^bits in [0, 1); ``generator``
        a ``torch.Generator``, or an ``int`` seed for noise keyed on each image (see ``dequantize``)."""
        self.check_event(images, "images")
        return dequantize(images, self.bits, generator)

    def discrete_log_prob(self, images: Tensor, generator: torch.Generator | int | None = None,
                          context: Tensor | None = None) -> Tensor:
        """One-draw estimate of the dequantisation bound on log P(images | c) at ``bits`` bits, in nats.

        log p((k + u) / 2^bits) − D · log 2^bits; its mean over images lower-bounds the mean log P.
        """
        return self.log_prob(self.dequantize(images, generator), context) + log_bin_volume(self.dims, self.bits)

    def bits_per_dim(self, images: Tensor, generator: torch.Generator | int | None = None,
                     context: Tensor | None = None) -> Tensor:
        """Bits per pixel of each image, (NLL_continuous + D · log 2^bits) / (D · ln 2)."""
        return bits_per_dim(-self.log_prob(self.dequantize(images, generator), context), self.dims, self.bits)

    def training_loss(self, batch: Tensor, objective: str, context: Tensor | None = None) -> Tensor:
        """−mean discrete_log_prob(batch), fresh dequantisation noise every step (the trainer's hook)."""
        if objective != "mle":
            raise FlowforgeError(f"image flows train only by maximum likelihood, not {objective!r}")
        return -self.discrete_log_prob(batch, context=context).mean()

    def to_images(self, x: Tensor) -> Tensor:
        """Continuous pixels (a sample, say) → quantised images on the stored 8-bit scale."""
        return quantize(x, self.bits)

    def interpolate(self, a: Tensor, b: Tensor, steps: int = 8, context: Tensor | None = None) -> Tensor:
        """Decode (1 − t)·f(a) + t·f(b) for ``steps`` values of t in [0, 1]: shape (steps, C, H, W)."""
        with torch.no_grad():
            pair_context = None if context is None else context.expand(2, context.shape[-1])
            z, _ = self.forward(torch.stack([a, b]), pair_context)
            t = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device).view(-1, 1, 1, 1)
            path_context = None if context is None else context.expand(steps, context.shape[-1])
            return self.inverse((1 - t) * z[:1] + t * z[1:], path_context)[0]
