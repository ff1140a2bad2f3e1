"""A fixed elementwise affine map that carries the data's standardisation statistics.

Placed first in a flow, it lets the networks work on unit-scale data while
``log_prob`` and ``sample`` stay in data units:  y = (x - mean) / std,
log|det J| = -Σ log std.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.errors import warn
from flowforge.transforms.base import Transform

UNSET_WARNING_SCALE = 3.0  # beyond it the layers after an unset Standardize see data outside a spline's ±3


class Statistics(torch.nn.Module):
    """A per-column mean and std kept as buffers (saved with the weights), set from training data."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        std = torch.as_tensor(std, dtype=self.std.dtype)
        if (std <= 0).any():
            raise ValueError("standardisation needs a positive std for every column")
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(std)


class Standardize(Statistics, Transform):
    """y = (x − mean) / std with statistics stored as buffers (saved with the weights);
    log|det J| = −Σ log std, so densities stay in data units while the layers after it see unit scale.

    >>> import torch
    >>> from flowforge.transforms import Standardize
    >>> s = Standardize(2); s.set_statistics(torch.tensor([1., 2.]), torch.tensor([2., 4.]))
    >>> s(torch.tensor([[3., 6.]]))[0]
    tensor([[1., 1.]])
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.statistics_checked = False

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        super().set_statistics(mean, std)
        self.statistics_checked = True  # set on purpose: nothing to warn of

    def fit(self, rows: Tensor, statistics: tuple[Tensor, Tensor]) -> None:
        """Set the layer from the training ``rows`` (N, D), whose per-column (mean, std) are ``statistics``."""
        self.set_statistics(*statistics)

    def at_unit_scale(self) -> bool:
        """Whether the layer is still the identity it is built as (mean 0, std 1: never set, or set so)."""
        return not bool((self.mean != 0).any() or (self.std != 1).any())

    def log_abs_det(self, batch: int, like: Tensor) -> Tensor:
        return (-self.std.log().sum()).to(like.dtype).expand(batch)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not getattr(self, "statistics_checked", True):  # (absent: pickled before it existed)
            self.statistics_checked = True
            self._warn_if_never_set(x)
        return (x - self.mean) / self.std, self.log_abs_det(x.shape[0], x)

    def _warn_if_never_set(self, x: Tensor) -> None:
        """A loop of one's own that skipped :func:`fit_standardization` trains on raw data with a layer
        that does nothing: said once, at the first training batch, when that batch is far from unit scale."""
        if len(x) < 2 or not self.at_unit_scale():
            return
        with torch.no_grad():
            rows = x.detach().reshape(len(x), -1)
            rows = rows[torch.isfinite(rows).all(1)]
            if len(rows) < 2:
                return
            centre, spread = float(rows.mean(0).abs().max()), float(rows.std(0).max())
        if centre > UNSET_WARNING_SCALE or spread > UNSET_WARNING_SCALE:
            warn(f"this flow's {type(self).__name__} layer still has mean 0 and std 1 (its statistics were never set), yet its "
                 f"first training batch has a column of mean up to {centre:.3g} in size and std up to {spread:.3g}: "
                 "call flowforge.transforms.fit_standardization(flow, x_train) before training (flowforge train "
                 "does), or build the flow without standardize=True")

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y * self.std + self.mean, -self.log_abs_det(y.shape[0], y)


CORRELATION_RIDGE = 1e-9  # on a correlation matrix's diagonal: collinear columns still have a Cholesky factor
# (the fitted Gaussian the flows are compared with adds the same, so a Whiten starts exactly at it)


class Whiten(Standardize):
    """y = L⁻¹ (x − mean) / std, with L Lᵀ the correlation matrix of the training rows (plus
    ``CORRELATION_RIDGE`` on its diagonal): the data standardised and decorrelated, so the layers
    after it start from the fitted full-covariance Gaussian; log|det J| = −Σ log std − Σ log Lᵢᵢ.

    Set by :func:`fit_standardization` as a :class:`Standardize` is; until then the identity.

    >>> import torch
    >>> from flowforge.transforms import Whiten, fit_standardization
    >>> x = torch.randn(500, 2) @ torch.tensor([[1.0, 0.9], [0.0, 0.4]]) + 3
    >>> w = Whiten(2); fit_standardization(w, x)
    >>> y, _ = w(x)
    >>> bool((torch.cov(y.T) - torch.eye(2)).abs().max() < 1e-2)
    True
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("cholesky", torch.eye(dim))

    def fit(self, rows: Tensor, statistics: tuple[Tensor, Tensor]) -> None:
        super().fit(rows, statistics)
        unit = ((rows - statistics[0]) / statistics[1]).to(torch.float64)
        correlation = unit.T @ unit / len(unit)
        correlation = correlation + CORRELATION_RIDGE * torch.eye(len(correlation), dtype=torch.float64,
                                                                  device=correlation.device)
        self.cholesky.copy_(torch.linalg.cholesky(correlation).to(self.cholesky))

    def at_unit_scale(self) -> bool:
        identity = torch.eye(len(self.cholesky), dtype=self.cholesky.dtype, device=self.cholesky.device)
        return super().at_unit_scale() and torch.equal(self.cholesky, identity)

    def log_abs_det(self, batch: int, like: Tensor) -> Tensor:
        return super().log_abs_det(batch, like) - self.cholesky.diagonal().log().sum().to(like.dtype)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        unit, log_abs_det = super().forward(x, context)
        return torch.linalg.solve_triangular(self.cholesky.to(unit.dtype), unit.T, upper=False).T, log_abs_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super().inverse(y @ self.cholesky.T.to(y.dtype), context)


class StandardizeContext(Statistics):
    """c ↦ (c − mean) / std, a conditional flow's ``context_embedding``: its networks see unit-scale
    conditions while callers give them in data units (a table's columns of any scale).

    >>> import torch
    >>> from flowforge.transforms import StandardizeContext
    >>> e = StandardizeContext(1); e.set_statistics(torch.tensor([10.]), torch.tensor([5.]))
    >>> e(torch.tensor([[20.]]))
    tensor([[2.]])
    """

    def forward(self, context: Tensor) -> Tensor:
        return (context - self.mean) / self.std


def fit_standardization(module: torch.nn.Module, train: Tensor, context: Tensor | None = None) -> None:
    """Set every :class:`Standardize` inside ``module`` to the mean and std of ``train`` (N, D) —
    what ``flowforge train`` does before its first step, for a loop of your own. With the training
    rows' ``context`` (N, C), a conditional flow also gets (or updates) a :class:`StandardizeContext`
    as its ``context_embedding``, so its networks see unit-scale conditions given in data units.

    >>> import torch
    >>> from flowforge.transforms import fit_standardization
    >>> from flowforge.models import NSF
    >>> flow = NSF(2, num_layers=1, hidden=8, context_dim=1, standardize=True)
    >>> x, c = torch.randn(100, 2) * 100 + 500, torch.rand(100, 1) * 20 + 2000
    >>> fit_standardization(flow, x, context=c)
    >>> bool(flow.context_embedding(c).abs().mean() < 2)
    True
    """
    layers = [m for m in module.modules() if isinstance(m, Standardize)]
    if not layers and context is None:
        raise ValueError("the flow has no Standardize layer to set; build it with standardize=True")
    train = torch.as_tensor(train)
    if layers and (train.dim() != 2 or train.shape[1] != layers[0].mean.shape[0]):
        raise ValueError(f"give the training rows as (N, D) = (N, {layers[0].mean.shape[0]}); got shape "
                         f"{tuple(train.shape)}")
    statistics = _statistics(train, "training data") if layers else None
    if context is not None:  # checked whole before anything is set
        context = _context_rows(module, context, len(train))
        context_statistics = _statistics(context, "context")
    for layer in layers:
        layer.fit(train, statistics)
    if context is not None:
        if getattr(module, "context_embedding", None) is None:
            module.context_embedding = StandardizeContext(context.shape[1])
        module.context_embedding.set_statistics(*context_statistics)


def _context_rows(module: torch.nn.Module, context: Tensor, rows: int) -> Tensor:
    """``context`` as an (N, C) tensor that ``module`` can standardise: one row per training row, as
    many columns as the flow reads, and an embedding (if it has one) that is a :class:`StandardizeContext`."""
    context = torch.as_tensor(context)
    if context.dim() != 2 or context.shape[0] != rows:
        raise ValueError(f"give the context as (N, C) = ({rows}, C), one row per training row; got shape "
                         f"{tuple(context.shape)}")
    embedding, width = getattr(module, "context_embedding", None), getattr(module, "context_dim", None)
    if embedding is not None and not isinstance(embedding, StandardizeContext):
        raise ValueError(f"the flow's context_embedding is a {type(embedding).__name__}, not a StandardizeContext; "
                         "standardise its conditions inside that module")
    if width == 0:
        raise ValueError("the flow is unconditional (context_dim=0): it takes no context to standardise")
    if width and context.shape[1] != width:
        raise ValueError(f"the flow reads {width} context values per row, the context has {context.shape[1]}")
    return context


def _statistics(rows: Tensor, what: str) -> tuple[Tensor, Tensor]:
    rows = torch.as_tensor(rows)
    finite = torch.isfinite(rows).all(1)
    if not bool(finite.all()):
        raise ValueError(f"row {int((~finite).nonzero()[0])} of the {what} holds NaN or an infinite value; "
                         "drop or impute it first")
    mean, std = rows.mean(0), rows.std(0, unbiased=False)
    if (std <= 0).any():
        raise ValueError(f"a column of the {what} is constant; it has no spread to standardise by")
    return mean, std
