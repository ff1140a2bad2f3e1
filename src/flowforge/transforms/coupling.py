"""Coupling layers: a mask, a conditioner and an element-wise bijection (nflows' decomposition).

The mask splits x into a part x_b that passes unchanged and a part x_~b that is transformed by
an element-wise monotone map h whose parameters the conditioner predicts from x_b (and the
context c):

    y_b = x_b,    y_~b = h(x_~b; θ(x_b, c)),    log|det J| = Σ log|∂h/∂x_~b|

The Jacobian is triangular, so its log-determinant costs O(D) instead of O(D³)
(Dinh et al. 2017, "Density estimation using Real NVP", arXiv:1605.08803).

Three masks: :class:`FeatureMask` (any binary mask over vector features; only the d given
features enter the network), :class:`ChannelSplit` (half the channels of an image, Glow) and
:class:`PixelMask` (any binary (C, H, W) mask, e.g. RealNVP's checkerboard: the network sees the
masked image and the mask). ``AffineCoupling``, ``ChannelCoupling`` and ``MaskedCoupling`` are
the named combinations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.nets import CNNConditioner, MLPConditioner, SeparateMLPConditioner
from flowforge.transforms.base import Transform, check_context
from flowforge.transforms.elementwise import ElementwiseMap, affine_or_additive
from flowforge.transforms.spline import RationalQuadraticSpline


class Mask(nn.Module):
    """How a coupling splits its input: ``split(x) -> (given, free)``, ``join(given, free) -> x``,
    ``network_input(given)`` (what the conditioner sees) and ``total(log_der)`` (the log-det)."""

    def network_input(self, given: Tensor) -> Tensor:
        return given

    def total(self, log_der: Tensor) -> Tensor:
        return log_der.flatten(1).sum(1)


class FeatureMask(Mask):
    """A binary mask over the D features of vectors (1 = passes through and conditions).

    >>> import torch
    >>> from flowforge.transforms import FeatureMask
    >>> given, free = FeatureMask([1, 1, 0]).split(torch.tensor([[1.0, 2.0, 3.0]]))
    >>> given, free
    (tensor([[1., 2.]]), tensor([[3.]]))
    """

    def __init__(self, mask: Tensor | list[int]):
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.dim() != 1:
            raise ValueError(f"the coupling mask must be a 1-D list of 0s and 1s, one per feature; got shape {tuple(mask.shape)}")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("the coupling mask must hold only 0s and 1s")
        mask = mask.bool()
        d, dim = int(mask.sum()), mask.numel()
        if d == 0 or d == dim:
            raise ValueError(f"the coupling mask must pass some but not all features; got d={d} of D={dim}")
        self.register_buffer("mask", mask)
        self.register_buffer("cond_idx", mask.nonzero().flatten())
        self.register_buffer("trans_idx", (~mask).nonzero().flatten())
        # Output of torch.cat([given, free]) put back in feature order.
        self.register_buffer("unshuffle", torch.argsort(torch.cat([self.cond_idx, self.trans_idx])))

    @property
    def sizes(self) -> tuple[int, int]:
        """(d, D − d): features given, features transformed."""
        return self.cond_idx.numel(), self.trans_idx.numel()

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # Indexing alone would drop extra columns silently (or fail with an IndexError on too few).
        if x.dim() != 2 or x.shape[1] != self.mask.numel():
            raise ValueError(
                f"this coupling's mask covers {self.mask.numel()} features, so it takes input of shape "
                f"(batch, {self.mask.numel()}); got {tuple(x.shape)}"
            )
        return x[:, self.cond_idx], x[:, self.trans_idx]

    def join(self, given: Tensor, free: Tensor) -> Tensor:
        return torch.cat([given, free], dim=1)[:, self.unshuffle]

    def total(self, log_der: Tensor) -> Tensor:
        return log_der.sum(dim=1)


class ChannelSplit(Mask):
    """The first ⌊C/2⌋ channels of (B, C, H, W) images condition the rest; ``flip`` swaps the roles."""

    def __init__(self, channels: int, flip: bool = False):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        self.flip = flip
        self.sizes = (channels // 2, channels - channels // 2)

    @property
    def given_and_free(self) -> tuple[int, int]:
        return self.sizes[::-1] if self.flip else self.sizes

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first, second = x.split(self.sizes, dim=1)
        return (second, first) if self.flip else (first, second)

    def join(self, given: Tensor, free: Tensor) -> Tensor:
        return torch.cat([free, given] if self.flip else [given, free], dim=1)


class PixelMask(Mask):
    """Any binary (C, H, W) mask over images (1 = passes through and conditions).

    The network sees the masked image and the mask itself (so it knows which pixels are given)
    and predicts parameters for every pixel; only the unmasked ones are used.
    """

    def __init__(self, mask: Tensor):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() != 3 or not ((mask == 0) | (mask == 1)).all():
            raise ValueError("the coupling mask must be a (C, H, W) tensor of 0s and 1s")
        if mask.sum() == 0 or mask.sum() == mask.numel():
            raise ValueError("the coupling mask must pass some but not all pixels")
        self.register_buffer("mask", mask)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.mask, x

    def network_input(self, given: Tensor) -> Tensor:
        return torch.cat([given, self.mask.to(given.dtype).expand_as(given)], dim=1)

    def join(self, given: Tensor, free: Tensor) -> Tensor:
        return torch.where(self.mask.bool(), given, free)

    def total(self, log_der: Tensor) -> Tensor:
        return torch.where(self.mask.bool(), 0.0, log_der).flatten(1).sum(1)


class Coupling(Transform):
    """A coupling layer: ``mask`` splits x, ``conditioner(given, context)`` predicts the
    parameters of ``elementwise`` for the free part.

    Args:
        mask: a :class:`Mask` (vector features, image channels or pixels).
        conditioner: a module mapping (given part, context) to the map's parameters,
            (batch, P·k, *rest) for a free part of shape (batch, k, *rest).
        elementwise: the element-wise map, with P = ``elementwise.params_per_element``.

    >>> import torch
    >>> from flowforge.nets import MLPConditioner
    >>> from flowforge.transforms import Affine, Coupling, FeatureMask
    >>> layer = Coupling(FeatureMask([1, 0]), MLPConditioner(1, 1, params=2, hidden=8, depth=1), Affine())
    >>> y, log_abs_det = layer(torch.randn(4, 2))
    """

    def __init__(self, mask: Mask, conditioner: nn.Module, elementwise: ElementwiseMap):
        super().__init__()
        self.partition, self.conditioner, self.elementwise = mask, conditioner, elementwise
        self.context_dim = getattr(conditioner, "context_dim", 0)
        self._register_load_state_dict_pre_hook(self._rename_legacy_keys)  # a method: the flow pickles

    def _rename_legacy_keys(self, state: dict, prefix: str, *_) -> None:
        rename_legacy_keys(self, state, prefix)

    @property
    def mask(self) -> Tensor | None:
        """The binary mask (1 = passes through), or None for a channel split."""
        return getattr(self.partition, "mask", None)

    def _params(self, given: Tensor, context: Tensor | None) -> Tensor:
        context = check_context(context, self.context_dim, given.shape[0], type(self).__name__)
        return self.conditioner(self.partition.network_input(given), context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        given, free = self.partition.split(x)
        y, log_der = self.elementwise(free, self._params(given, context))
        return self.partition.join(given, y), self.partition.total(log_der)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        given, free = self.partition.split(y)
        x, log_der = self.elementwise.inverse(free, self._params(given, context))
        return self.partition.join(given, x), self.partition.total(log_der)

    def legacy_keys(self) -> dict[str, str]:
        """Weights saved before the coupling had parts (flowforge ≤ 0.1.0) kept the network as
        ``net.*`` and the mask buffers directly on the layer: old name → current name."""
        return {key: f"{part}.{key}" for part in ("partition", "conditioner")
                for key in getattr(self, part).state_dict()}


class AffineCoupling(Coupling):
    """RealNVP's affine coupling on vectors with an arbitrary binary mask (1 = passes through).

        y_b = x_b,    y_~b = x_~b · exp(s) + t,    (s, t) = NN(x_b, c),  s bounded by tanh

    The MLP widens from the d given features (+ ``context_dim``) to ``hidden`` units for
    ``depth`` layers and ends in the D − d values of each of s and t; its last layer starts at
    zero, so the layer starts as the identity. With ``mixed_precision`` the MLP runs in bfloat16
    while training (in the input's dtype in evaluation mode); the affine update and log|det J| = Σ s
    stay in float32, so the layer remains exactly invertible and normalised. With ``separate_networks`` s and t come from two MLPs of that size
    (the book's coupling: an ``s`` tower ending in tanh and a ``t`` tower) instead of one with two heads.
    ``scale_bound`` widens the tanh bound: s = scale_bound · tanh(raw / scale_bound).

    >>> import torch
    >>> from flowforge.transforms import AffineCoupling
    >>> layer = AffineCoupling([1, 1, 0], hidden=16, depth=2)  # D=3, d=2: x1, x2 scale and shift x3
    >>> book = AffineCoupling([1, 0], hidden=16, depth=2, separate_networks=True)
    >>> y, log_abs_det = book(torch.randn(8, 2))
    >>> y, log_abs_det = layer(torch.randn(8, 3))
    >>> conditional = AffineCoupling([1, 0], hidden=16, depth=2, context_dim=4)
    >>> y, log_abs_det = conditional(torch.randn(8, 2), context=torch.randn(8, 4))
    """

    def __init__(self, mask: Tensor | list[int], hidden: int = 256, depth: int = 4, activation: str = "relu",
                 mixed_precision: bool = False, context_dim: int = 0, scale: str = "tanh",
                 separate_networks: bool = False, scale_bound: float = 1.0):
        partition = FeatureMask(mask)
        elementwise = affine_or_additive(scale, scale_bound)
        given, free = partition.sizes
        if separate_networks and elementwise.params_per_element != 2:
            raise ValueError("separate s and t networks need an affine scale (tanh or sigmoid), not additive")
        if separate_networks:
            conditioner = SeparateMLPConditioner(given, free, hidden, depth, activation, context_dim, mixed_precision)
        else:
            conditioner = MLPConditioner(given, free, elementwise.params_per_element, hidden, depth, activation,
                                         context_dim, mixed_precision)
        super().__init__(partition, conditioner, elementwise)


class SplineCoupling(Coupling):
    """A neural-spline coupling on vectors: the free features pass through a monotone
    rational-quadratic spline (``bins`` bins on [−``bound``, ``bound``], the identity outside)
    whose widths, heights and knot derivatives an MLP predicts from the given features and the context.

        y_b = x_b,    y_~b = RQS(x_~b; θ(x_b, c))

    Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032.

    >>> import torch
    >>> from flowforge.transforms import SplineCoupling
    >>> layer = SplineCoupling([1, 0, 1], bins=4, hidden=16, depth=2, context_dim=2)
    >>> y, log_abs_det = layer(torch.randn(8, 3), context=torch.randn(8, 2))
    """

    def __init__(self, mask: Tensor | list[int], bins: int = 8, bound: float = 3.0, hidden: int = 64,
                 depth: int = 2, activation: str = "relu", context_dim: int = 0):
        partition = FeatureMask(mask)
        elementwise = RationalQuadraticSpline(bins, bound)
        given, free = partition.sizes
        conditioner = MLPConditioner(given, free, elementwise.params_per_element, hidden, depth, activation,
                                     context_dim)
        super().__init__(partition, conditioner, elementwise)


class ChannelCoupling(Coupling):
    """Glow's coupling over a channel split of (B, C, H, W) images (Kingma & Dhariwal 2018,
    "Glow: Generative Flow with Invertible 1x1 Convolutions", arXiv:1807.03039).

        y_a = x_a,    y_b = x_b · s(x_a, c) + t(x_a, c)    (or x_b + t for ``scale="additive"``)

    The first ⌊C/2⌋ channels condition the rest; ``flip`` swaps the roles. s and t come from a
    CNN whose last convolution starts at zero; a context enters as constant extra channels.

    >>> import torch
    >>> from flowforge.transforms import ChannelCoupling
    >>> x = torch.randn(2, 4, 8, 8)
    >>> y, log_abs_det = ChannelCoupling(4, hidden=16)(x)
    >>> torch.equal(y[:, :2], x[:, :2])    # the conditioning half passes unchanged
    True
    """

    def __init__(self, channels: int, hidden: int = 512, depth: int = 2, scale: str = "sigmoid",
                 flip: bool = False, context_dim: int = 0):
        partition = ChannelSplit(channels, flip)
        elementwise = affine_or_additive(scale)
        given, free = partition.given_and_free
        conditioner = CNNConditioner(given, free, elementwise.params_per_element, hidden, depth, context_dim)
        super().__init__(partition, conditioner, elementwise)


class MaskedCoupling(Coupling):
    """RealNVP's image coupling with any binary (C, H, W) mask b (1 = passes through):

        y = b⊙x + (1−b)⊙(x⊙s(b⊙x, c) + t(b⊙x, c)),    log|det J| = Σ (1−b)⊙log s

    >>> import torch
    >>> from flowforge.transforms import checkerboard_mask, MaskedCoupling
    >>> layer = MaskedCoupling(checkerboard_mask((1, 4, 4)), hidden=8)
    >>> y, log_abs_det = layer(torch.randn(3, 1, 4, 4))
    """

    def __init__(self, mask: Tensor, hidden: int = 64, depth: int = 2, scale: str = "tanh", context_dim: int = 0):
        partition = PixelMask(mask)
        elementwise = affine_or_additive(scale)
        channels = partition.mask.shape[0]
        conditioner = CNNConditioner(2 * channels, channels, elementwise.params_per_element, hidden, depth,
                                     context_dim)
        super().__init__(partition, conditioner, elementwise)


def rename_legacy_keys(module: nn.Module, state: dict, prefix: str = "") -> dict:
    """Rename, in place, the keys of ``state`` (a state dict of ``module``, or a dict keyed by its
    parameter names, under ``prefix``) that older versions wrote, for every layer that lists its
    ``legacy_keys``; returns ``state``."""
    for name, layer in module.named_modules(prefix=prefix.rstrip(".")):
        layer_prefix = f"{name}." if name else ""
        for old, new in getattr(layer, "legacy_keys", dict)().items():
            if layer_prefix + old in state and layer_prefix + new not in state:
                state[layer_prefix + new] = state.pop(layer_prefix + old)
    return state


def checkerboard_mask(shape: tuple[int, int, int], parity: int = 0) -> Tensor:
    """1 where (row + column + parity) is even, on every channel: shape (C, H, W).

    >>> from flowforge.transforms import checkerboard_mask
    >>> checkerboard_mask((1, 2, 2))[0].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    c, h, w = shape
    board = (torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1) + parity) % 2 == 0
    return board.expand(c, h, w).float()


def channel_mask(shape: tuple[int, int, int], parity: int = 0) -> Tensor:
    """1 on the first ⌊C/2⌋ channels (parity 0) or on the others (parity 1): shape (C, H, W).

    >>> from flowforge.transforms import channel_mask
    >>> channel_mask((4, 1, 1)).flatten().tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    c, h, w = shape
    first = (torch.arange(c) < c // 2).view(c, 1, 1).expand(c, h, w).float()
    return first if parity % 2 == 0 else 1 - first
