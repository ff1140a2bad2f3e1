"""The book's RealNVP built in each library, behind one small interface.

Each builder returns a ``Contender``: ``loss(x)`` (mean NLL in the model's units),
``log_prob(x)``, ``sample(n)`` and ``parameters()``. The architecture is the same everywhere:
``layers`` affine couplings with alternating masks, each an MLP with ``depth`` hidden ReLU
layers of width ``hidden``, a standard normal base.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch
from torch import nn


@dataclass
class Contender:
    module: nn.Module
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[int], torch.Tensor]
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam  # what the library's docs train with
    grad_clip: float | None = None  # gradient-norm clipping, where the library's trainer clips
    after_step: Callable[[int], None] = lambda step: None  # e.g. a weight average's update
    evaluating: Callable[[], ContextManager] = field(default=contextlib.nullcontext)  # weights to evaluate
    train_noise: float = 0.0  # std of the noise added to (standardised) training batches, where the trainer adds it

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.train_noise:
            x = x + self.train_noise * torch.randn_like(x)
        return -self.log_prob(x).mean()

    def parameters(self):
        return self.module.parameters()


@contextlib.contextmanager
def averaged_and_evaluating(flow: nn.Module, ema) -> ContextManager:
    """flowforge's weights as its trainer scores them: the moving average, in evaluation mode
    (bf16 coupling networks, a training-time speed-up, run in float32 there)."""
    from flowforge.nets import evaluation_mode

    with ema.applied(), evaluation_mode(flow):
        yield flow


def flowforge_realnvp(dim: int, layers: int, hidden: int, depth: int, **options) -> Contender:
    """flowforge as its trainer runs it: its default options, optimiser, clipping, weight average and training
    noise (the benchmark's data are standardised, so the noise's std is ``train_noise`` itself)."""
    from flowforge.models import RealNVP
    from benchmarks.data import moons_defaults
    from flowforge.training.ema import EMA
    from flowforge.training.loop import make_optimizer

    defaults = moons_defaults()
    flow = RealNVP(dim, num_layers=layers, hidden=hidden, depth=depth, **options)
    ema = EMA(flow, defaults.ema_decay)

    def optimizer(parameters, lr):
        return make_optimizer(parameters, lr, defaults.weight_decay)

    return Contender(flow, flow.log_prob, lambda n: flow.sample(n), optimizer, defaults.grad_clip,
                     ema.update, lambda: averaged_and_evaluating(flow, ema), defaults.train_noise)


def zuko_realnvp(dim: int, layers: int, hidden: int, depth: int) -> Contender:
    import zuko

    flow = zuko.flows.RealNVP(dim, transforms=layers, hidden_features=[hidden] * depth)
    return Contender(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def nflows_realnvp(dim: int, layers: int, hidden: int, depth: int) -> Contender:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms import AffineCouplingTransform, CompositeTransform

    class Net(nn.Module):  # nflows calls transform_net(x, context)
        def __init__(self, features_in, features_out):
            super().__init__()
            self.mlp = MLP((features_in,), (features_out,), hidden_sizes=[hidden] * depth, activation=torch.relu)

        def forward(self, x, context=None):
            return self.mlp(x)

    net = Net

    transforms = [AffineCouplingTransform((torch.arange(dim) + i) % 2, net) for i in range(layers)]
    flow = Flow(CompositeTransform(transforms), StandardNormal([dim]))
    return Contender(flow, flow.log_prob, lambda n: flow.sample(n))


def normflows_realnvp(dim: int, layers: int, hidden: int, depth: int) -> Contender:
    import normflows as nf

    half, rest = dim // 2, dim - dim // 2
    flows = []
    for _ in range(layers):
        flows += [nf.flows.AffineCouplingBlock(nf.nets.MLP([half] + [hidden] * depth + [2 * rest], init_zeros=True)),
                  nf.flows.Permute(dim, mode="swap")]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(dim, trainable=False), flows)
    return Contender(model, model.log_prob, lambda n: model.sample(n)[0])


LIBRARIES: dict[str, Callable[..., Contender]] = {
    "flowforge": flowforge_realnvp,
    "zuko": zuko_realnvp,
    "nflows": nflows_realnvp,
    "normflows": normflows_realnvp,
}
