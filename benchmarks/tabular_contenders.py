"""Neural spline flows and masked autoregressive flows in flowforge, zuko and nflows, at one size,
each conditional on an optional context, behind the benchmarks' :class:`Contender` interface.

Every contender takes the same batches: a tensor whose first ``dim`` columns are x and whose
remaining ``context_dim`` columns are the context c; ``log_prob(batch)`` is log q(x | c).
The size is common: ``layers`` transforms, conditioner networks of ``depth`` hidden layers of
``hidden`` ReLU units, ``bins`` spline bins. Each library's own conventions otherwise: flowforge's
splines live on [−4, 4] (its default), zuko's on [−5, 5] (fixed in zuko), nflows' on [−3, 3]
(the tail bound of the NSF paper's tabular experiments; nflows' default is 1). Peers train as their
documentation does (Adam, lr 1e-3, constant, no clipping); flowforge as its trainer does, with the
recipe of its table (or toy) data (:func:`recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from benchmarks.contenders import Contender, averaged_and_evaluating

PEER_LR = 1e-3


@dataclass
class TabularContender(Contender):
    """A contender on batches [x | c]: training noise (if any) goes on x only, and ``learning_rate``
    (if given) sets the optimiser's rate from (step, fraction of the time budget spent)."""
    dim: int = 0
    learning_rate: Callable[[int, float], float] | None = None
    lr: float = PEER_LR

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        if self.train_noise:
            noise = torch.zeros_like(batch)
            noise[:, :self.dim] = torch.randn(batch.shape[0], self.dim, dtype=batch.dtype)
            batch = batch + self.train_noise * noise
        return -self.log_prob(batch).mean()


def recipe(model: str, kind: str, rows: int, dim: int):
    """The TrainConfig flowforge's trainer resolves for ``model`` on data of ``kind`` ("table" or
    "toy") with ``rows`` training rows of ``dim`` features (optimiser, noise, EMA, schedule)."""
    from flowforge.models.specs import DataInfo
    from flowforge.training import TrainConfig

    return TrainConfig(data="data.csv", model=model).resolved(DataInfo(kind, rows, (dim,)))


def _split(dim: int, context_dim: int):
    def split(batch: torch.Tensor):
        return batch[:, :dim], (batch[:, dim:] if context_dim else None)
    return split


def _flowforge(flow, model: str, dim: int, context_dim: int, data_kind: str, rows: int) -> TabularContender:
    from flowforge.training.ema import EMA
    from flowforge.training.loop import cosine_decay, make_optimizer

    config = recipe(model, data_kind, rows, dim)
    ema = EMA(flow, config.ema_decay)
    split = _split(dim, context_dim)

    def log_prob(batch):
        x, c = split(batch)
        return flow.log_prob(x, context=c)

    def sample(n: int, context: torch.Tensor | None = None):
        return flow.sample((1,), context=context)[0] if context_dim else flow.sample(n)

    warmup = {"steps": config.warmup_steps}

    def learning_rate(step: int, fraction: float) -> float:
        # the trainer's schedule (flowforge.training.loop.learning_rate) with the budget's fraction as
        # the run's: a linear warm-up capped, as there, at a tenth of the run, then cosine decay
        if fraction >= 0.1:
            warmup["steps"] = min(warmup["steps"], step)
        if step < warmup["steps"]:
            return config.lr * (step + 1) / warmup["steps"]
        return cosine_decay(config.lr, fraction, config.min_lr_ratio)

    def optimizer(parameters, lr):
        return make_optimizer(parameters, lr, config.weight_decay)

    return TabularContender(flow, log_prob, sample, optimizer, config.grad_clip, ema.update,
                            lambda: averaged_and_evaluating(flow, ema), config.train_noise, dim=dim,
                            learning_rate=learning_rate, lr=config.lr)


def flowforge_nsf(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    from flowforge.models import NSF

    flow = NSF(dim, num_layers=layers, bins=bins, hidden=hidden, depth=depth, context_dim=context_dim)
    return _flowforge(flow, "nsf", dim, context_dim, data_kind, rows)


def flowforge_nsf_ar(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    from flowforge.models import NSF

    flow = NSF(dim, num_layers=layers, bins=bins, hidden=hidden, depth=depth, context_dim=context_dim,
               autoregressive=True)
    return _flowforge(flow, "nsf", dim, context_dim, data_kind, rows)


def flowforge_maf(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    from flowforge.models import MAF

    flow = MAF(dim, num_layers=layers, hidden=hidden, depth=depth, context_dim=context_dim)
    return _flowforge(flow, "maf", dim, context_dim, data_kind, rows)


def flowforge_realnvp(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    from flowforge.models import RealNVP

    flow = RealNVP(dim, num_layers=layers, hidden=hidden, depth=depth, context_dim=context_dim)
    return _flowforge(flow, "realnvp", dim, context_dim, data_kind, rows)


def _zuko(flow, dim: int, context_dim: int) -> TabularContender:
    split = _split(dim, context_dim)

    def log_prob(batch):
        x, c = split(batch)
        return flow(c).log_prob(x)

    def sample(n: int, context: torch.Tensor | None = None):
        return flow(context).sample() if context_dim else flow().sample((n,))

    return TabularContender(flow, log_prob, sample, dim=dim)


def zuko_nsf(dim, context_dim, layers, hidden, depth, bins, data_kind, rows, passes=None):
    import zuko

    return _zuko(zuko.flows.NSF(dim, context_dim, bins=bins, transforms=layers, hidden_features=[hidden] * depth,
                                passes=passes), dim, context_dim)


def zuko_nsf_coupling(*args, **kwargs):
    return zuko_nsf(*args, **kwargs, passes=2)


def zuko_maf(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    import zuko

    return _zuko(zuko.flows.MAF(dim, context_dim, transforms=layers, hidden_features=[hidden] * depth),
                 dim, context_dim)


class _ContextMLP(nn.Module):
    """nflows' coupling network: called as net(x, context); a plain ReLU MLP on [x, c]."""

    def __init__(self, features_in: int, features_out: int, context_dim: int, hidden: int, depth: int):
        super().__init__()
        sizes = [features_in + context_dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], features_out))

    def forward(self, x, context=None):
        return self.net(x if context is None else torch.cat([x, context], dim=1))


NFLOWS_TAIL_BOUND = 3.0


def _nflows(transforms: list, dim: int, context_dim: int) -> TabularContender:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform

    flow = Flow(CompositeTransform(transforms), StandardNormal([dim]))
    split = _split(dim, context_dim)

    def log_prob(batch):
        x, c = split(batch)
        return flow.log_prob(x, context=c)

    def sample(n: int, context: torch.Tensor | None = None):
        return flow.sample(1, context=context)[:, 0] if context_dim else flow.sample(n)

    return TabularContender(flow, log_prob, sample, dim=dim)


def nflows_rq_coupling(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform

    mask = (torch.arange(dim) % 2 == 0).long()

    def net(features_in, features_out):
        return _ContextMLP(features_in, features_out, context_dim, hidden, depth)

    transforms = [PiecewiseRationalQuadraticCouplingTransform(mask if i % 2 == 0 else 1 - mask, net, num_bins=bins,
                                                              tails="linear", tail_bound=NFLOWS_TAIL_BOUND)
                  for i in range(layers)]
    return _nflows(transforms, dim, context_dim)


def _made_layers(make, dim: int, layers: int) -> list:
    from nflows.transforms import ReversePermutation

    out = []
    for i in range(layers):
        out += [make(), ReversePermutation(dim)] if i < layers - 1 else [make()]
    return out


def nflows_rq_autoregressive(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    from nflows.transforms import MaskedPiecewiseRationalQuadraticAutoregressiveTransform as RQ

    # nflows' MADE without residual blocks: a first layer and num_blocks more, so depth − 1 blocks
    return _nflows(_made_layers(lambda: RQ(dim, hidden, context_features=context_dim or None, num_bins=bins,
                                           tails="linear", tail_bound=NFLOWS_TAIL_BOUND, num_blocks=depth - 1,
                                           use_residual_blocks=False), dim, layers), dim, context_dim)


def nflows_maf(dim, context_dim, layers, hidden, depth, bins, data_kind, rows):
    from nflows.transforms import MaskedAffineAutoregressiveTransform

    return _nflows(_made_layers(lambda: MaskedAffineAutoregressiveTransform(
        dim, hidden, context_features=context_dim or None, num_blocks=depth - 1, use_residual_blocks=False),
        dim, layers), dim, context_dim)


CONTENDERS: dict[str, Callable[..., TabularContender]] = {
    "flowforge NSF": flowforge_nsf,
    "flowforge NSF-AR": flowforge_nsf_ar,
    "flowforge MAF": flowforge_maf,
    "flowforge RealNVP": flowforge_realnvp,
    "zuko NSF": zuko_nsf,
    "zuko MAF": zuko_maf,
    "nflows RQ-coupling": nflows_rq_coupling,
    "nflows RQ-AR": nflows_rq_autoregressive,
    "nflows MAF": nflows_maf,
}
EXTRA = {"zuko NSF-coupling": zuko_nsf_coupling}  # throughput only: zuko's NSF is autoregressive by default


def build(name: str, **kwargs) -> TabularContender:
    return {**CONTENDERS, **EXTRA}[name](**kwargs)


def library(name: str) -> str:
    return name.split()[0]
