"""From quantised pixels to a continuous density and back, and the bits-per-dimension metric.

Images are stored on the 8-bit scale (integers 0…255). At ``bits`` ≤ 8 bits a pixel is the level
k = ⌊x / 2^(8−bits)⌋ ∈ {0, …, 2^bits − 1}; uniform dequantisation turns it into
y = (k + u) / 2^bits ∈ [0, 1), u ~ U[0, 1). For a continuous density p on [0, 1]^D, Jensen's
inequality bounds the discrete log-likelihood (Theis et al., 2016):

    log P(k) ≥ E_u[log p((k + u) / 2^bits)] − D · log 2^bits

    bits/dim = (NLL_continuous + D · log 2^bits) / (D · ln 2),   NLL_continuous = −log p(y) in [0, 1] units

with NLL_continuous including every Jacobian of the flow's own preprocessing (a logit, say).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

STORED_BITS = 8


def check_bits(bits: int) -> int:
    if not (isinstance(bits, int) and 1 <= bits <= STORED_BITS):
        raise ValueError(f"bits must be an integer from 1 to {STORED_BITS}, got {bits!r}")
    return bits


def reduce_bits(images: Tensor, bits: int) -> Tensor:
    """8-bit-scale pixels → levels 0 … 2^bits − 1 (floor division by 2^(8 − bits)).

    >>> import torch
    >>> from flowforge.distributions.dequantization import reduce_bits
    >>> reduce_bits(torch.tensor([0., 15., 16., 255.]), 4).tolist()
    [0.0, 0.0, 1.0, 15.0]
    """
    return torch.floor(images / 2 ** (STORED_BITS - check_bits(bits)))


def dequantize(images: Tensor, bits: int, generator: torch.Generator | int | None = None) -> Tensor:
    """(level + u) / 2^bits ∈ [0, 1) with u ~ U[0, 1) per pixel.

    ``generator``: a ``torch.Generator`` for repeatable noise, or an ``int`` seed for noise keyed on
    each image's own levels (:func:`keyed_noise`: an image gets the same noise wherever it sits).
    """
    levels = reduce_bits(images, bits)
    if isinstance(generator, int):
        noise = keyed_noise(levels, generator)
    else:
        noise = torch.rand(levels.shape, generator=generator, dtype=levels.dtype, device=levels.device)
    return (levels + noise) / 2 ** bits


def keyed_noise(levels: Tensor, seed: int) -> Tensor:
    """U[0, 1) noise for each image in ``levels`` (N, ...) drawn from a generator seeded by a hash of
    ``seed`` and that image's levels: the same image gets the same noise in any batch, at any position,
    so a score of fixed noise is a function of the image alone (a batch-slot noise made an image's
    score depend on which images came before it).

    >>> import torch
    >>> from flowforge.distributions.dequantization import keyed_noise
    >>> a, b = torch.zeros(1, 4), torch.ones(1, 4)
    >>> torch.equal(keyed_noise(torch.cat([a, b]), 0)[1], keyed_noise(torch.cat([b, a]), 0)[0])
    True
    """
    cpu = levels.detach().to("cpu", torch.uint8).reshape(len(levels), -1).numpy()
    noise = torch.empty(levels.shape, dtype=levels.dtype)
    generator = torch.Generator()
    for i, image in enumerate(cpu):
        key = hashlib.blake2b(image.tobytes(), digest_size=8, key=str(seed).encode()).digest()
        generator.manual_seed(int.from_bytes(key, "little") >> 1)
        torch.rand(levels.shape[1:], generator=generator, dtype=levels.dtype, out=noise[i])
    return noise.to(levels.device)


def quantize(x: Tensor, bits: int) -> Tensor:
    """Continuous pixels in [0, 1] → 8-bit-scale images (level · 2^(8 − bits), the data's own format).
    Values outside [0, 1] are clipped; a non-finite value (a diverged sample) becomes 0.

    >>> import torch
    >>> from flowforge.distributions.dequantization import quantize
    >>> quantize(torch.tensor([-0.1, 0.5, 0.99, 1.3, float("nan")]), 4).tolist()
    [0.0, 128.0, 240.0, 240.0, 0.0]
    """
    levels = torch.floor(torch.nan_to_num(x, nan=0.0) * 2 ** check_bits(bits)).clamp(0, 2 ** bits - 1)
    return levels * 2 ** (STORED_BITS - bits)


def log_bin_volume(dims: int, bits: int) -> float:
    """log of one dequantisation bin's volume in [0, 1] units: −D · log 2^bits."""
    return -dims * bits * math.log(2)


def bits_per_dim(continuous_nll: Tensor | float, dims: int, bits: int) -> Tensor | float:
    """(NLL_continuous + D · log 2^bits) / (D · ln 2): nats of a density on [0, 1]^D → bits per pixel of the data.

    >>> from flowforge.distributions.dequantization import bits_per_dim
    >>> round(bits_per_dim(0.0, dims=64, bits=4), 6)    # a uniform density on [0, 1]^D: 4 bits a pixel
    4.0
    """
    return nats_to_bits_per_dim(continuous_nll - log_bin_volume(dims, bits), dims)


def nats_to_bits_per_dim(discrete_nll: Tensor | float, dims: int) -> Tensor | float:
    """A discrete NLL in nats per image (bin volume already counted) → bits per dimension: NLL / (D · ln 2)."""
    return discrete_nll / (dims * math.log(2))
