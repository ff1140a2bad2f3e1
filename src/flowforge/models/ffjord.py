"""FFJORD (Grathwohl et al., 2019): a flow whose transform is a continuous normalizing flow.

    log p(x) = log p_z(z(0)) + ∫_T^0 Tr ∂f/∂z dt,    z(T) = x,  dz/dt = f(z, t)

Trained by maximum likelihood (optionally with the kinetic and Jacobian penalties of Finlay
et al., 2020) or, simulation-free, by conditional flow matching; either way ``log_prob``
is the exact ODE likelihood.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.distributions import Base, Flow, StandardNormal
from flowforge.errors import FlowforgeError
from flowforge.models.flow_matching import TIME_POWER, check_coupling, check_time_power, flow_matching_loss
from flowforge.transforms import Compose, Standardize, Transform, Whiten
from flowforge.transforms.cnf import CNF
from flowforge.transforms.dynamics import ConcatSquashMLP

OBJECTIVES = ("mle", "flow-matching")


class CNFFlow(Flow):
    """A :class:`Flow` whose transform ends in a :class:`CNF` (after, say, a Standardize layer).

    Besides the ``Flow`` verbs it offers the trainer's hooks (``training_loss``,
    ``training_metrics``) and the marginals at intermediate times for plots.

    >>> import torch
    >>> from flowforge.models import FFJORD
    >>> flow = FFJORD(2, hidden=16, depth=2)
    >>> flow.training_loss(torch.randn(32, 2), "flow-matching").shape
    torch.Size([])
    """

    def __init__(self, transform: Transform, base: Base, kinetic: float = 0.0, jacobian: float = 0.0,
                 fm_coupling: str = "independent", fm_time_power: float = TIME_POWER):
        super().__init__(transform, base)
        layers = list(transform.transforms) if isinstance(transform, Compose) else [transform]
        if not isinstance(layers[-1], CNF) or any(isinstance(t, CNF) for t in layers[:-1]):
            raise ValueError("a CNFFlow's transform must end in its only CNF")
        if kinetic < 0 or jacobian < 0:
            raise ValueError("the kinetic and jacobian penalty weights must be >= 0")
        self.kinetic, self.jacobian, self.fm_coupling = float(kinetic), float(jacobian), check_coupling(fm_coupling)
        self.fm_time_power = check_time_power(fm_time_power)
        self._train_steps = 0

    @property
    def cnf(self) -> CNF:
        return self.transform.transforms[-1] if isinstance(self.transform, Compose) else self.transform

    def _prefix(self) -> list[Transform]:
        """The layers before the CNF (a Standardize, say), in data → latent order."""
        return list(self.transform.transforms)[:-1] if isinstance(self.transform, Compose) else []

    def _into_cnf(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data → the CNF's coordinates at t = T, with the log-det of that map."""
        total = x.new_zeros(x.shape[0])
        for layer in self._prefix():
            x, log_abs_det = layer(x, context)
            total = total + log_abs_det
        return x, total

    def _out_of_cnf(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        for layer in reversed(self._prefix()):
            y, _ = layer.inverse(y, context)
        return y

    def training_loss(self, batch: Tensor, objective: str, context: Tensor | None = None) -> Tensor:
        """"mle": -mean log p(x) + kinetic·mean ∫‖f‖² dt + jacobian·mean ∫‖∂f/∂z‖²_F dt
        (Hutchinson's trace if the CNF is so configured); "flow-matching": the straight-path
        conditional flow-matching loss in the CNF's coordinates (pairs coupled by ``fm_coupling``,
        times drawn with ``fm_time_power``)."""
        self._train_steps += 1
        context = self.embed_context(context)
        y, prefix_log_abs_det = self._into_cnf(batch, context)
        if objective == "flow-matching":
            noise = self.base.sample(y.shape[0], context)  # the path starts at the flow's own base
            return flow_matching_loss(self.cnf, y, self.fm_coupling, self.fm_time_power, context, noise)
        if objective != "mle":
            raise FlowforgeError(f"FFJORD trains by {' or '.join(OBJECTIVES)}, not {objective!r}")
        penalized = self.kinetic > 0 or self.jacobian > 0
        z, log_abs_det, kinetic, jacobian = self.cnf.integrate(y, self.cnf.total_time, 0.0, penalized, context)
        loss = -(self.base.log_prob(z, context) + log_abs_det + prefix_log_abs_det).mean()
        if penalized:
            loss = loss + self.kinetic * kinetic.mean() + self.jacobian * jacobian.mean()
        return loss

    def training_metrics(self) -> dict[str, int]:
        """Evaluations of f since the last call (see :class:`NFECounter`) and the training steps they span."""
        steps, self._train_steps = self._train_steps, 0
        return {**self.cnf.nfe.take(), "nfe_steps": steps}

    def marginal_log_prob(self, x: Tensor, t: float, context: Tensor | None = None) -> Tensor:
        """log p_t(x | c) in data units of the marginal at CNF time t: the base at t = 0, the model at t = T·L."""
        context = self.embed_context(context)
        y, prefix_log_abs_det = self._into_cnf(x, context)
        z, log_abs_det, _, _ = self.cnf.integrate(y, t, 0.0, context=context)
        return self.base.log_prob(z, context) + log_abs_det + prefix_log_abs_det

    def trajectory(self, z: Tensor, times: Tensor | list[float], context: Tensor | None = None) -> Tensor:
        """Latent points carried to each of the increasing ``times`` (in data units): shape (len(times), n, D)."""
        states, previous, y, context = [], 0.0, z, self.embed_context(context)
        with torch.no_grad():
            for t in [float(t) for t in times]:
                y = self.cnf.integrate(y, previous, t, context=context).z
                previous = t
                states.append(self._out_of_cnf(y, context))
        return torch.stack(states)


def FFJORD(dim: int, hidden: int = 64, depth: int = 3, num_layers: int = 1, solver: str = "dopri5",
           atol: float = 1e-5, rtol: float = 1e-5, trace: str = "exact", noise: str = "gaussian",
           adjoint: bool = False, kinetic: float = 0.0, jacobian: float = 0.0, time: float = 1.0,
           standardize: bool = False, activation: str = "tanh", solver_steps: int = 20,
           fm_coupling: str = "independent", fm_time_power: float = TIME_POWER, context_dim: int = 0,
           whiten: bool = False) -> CNFFlow:
    """FFJORD: ``num_layers`` CNF blocks of duration ``time``, each a concat-squash MLP
    (``depth`` layers of ``hidden`` units), solved by torchdiffeq's ``solver`` (adaptive with
    atol/rtol, or fixed-step with ``solver_steps`` steps per block), ``adjoint`` for O(1) memory.
    ``trace`` chooses the training-time divergence ("hutchinson" draws ``noise`` once per solve);
    ``kinetic`` and ``jacobian`` weigh the RNODE penalties; ``fm_coupling`` pairs noise and data
    for flow matching ("independent", or "ot": minibatch optimal transport) and ``fm_time_power``
    weighs its times towards the data end (density p·s^(p-1); 1: uniform). With ``standardize`` a
    :class:`Standardize` layer comes first, as in RealNVP, or with ``whiten`` too a :class:`Whiten`
    (the data decorrelated as well: the flow starts from the fitted Gaussian, as tables need). With ``context_dim`` > 0 the velocity
    field sees a context beside z, for both objectives: the flow models p(x | c).

    Grathwohl et al. 2019, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
    Models", arXiv:1810.01367; Lipman et al. 2023, "Flow Matching for Generative Modeling", arXiv:2210.02747.

    >>> import torch
    >>> from flowforge.models import FFJORD
    >>> flow = FFJORD(2, hidden=16, depth=2, trace="hutchinson", kinetic=0.01)
    >>> flow.log_prob(torch.randn(4, 2)).shape
    torch.Size([4])
    """
    if dim < 1:
        raise ValueError(f"FFJORD needs at least 1 feature, got {dim}")
    if num_layers < 1:
        raise ValueError("FFJORD needs at least one CNF block")
    if whiten and not standardize:
        raise ValueError("whiten=True needs standardised data: a Whiten layer takes the place of standardize=True's "
                         "Standardize (on the command line, drop --no-standardize)")
    velocities = [ConcatSquashMLP(dim, hidden, depth, activation, context_dim) for _ in range(num_layers)]
    cnf = CNF(velocities, time=time, solver=solver, atol=atol, rtol=rtol, solver_steps=solver_steps,
              trace=trace, noise=noise, adjoint=adjoint)
    layers: list[Transform] = [(Whiten if whiten else Standardize)(dim)] if standardize else []
    return CNFFlow(Compose(layers + [cnf]), StandardNormal(dim), kinetic=kinetic, jacobian=jacobian,
                   fm_coupling=fm_coupling, fm_time_power=fm_time_power)
