"""Unnormalised target densities log p̃(x) to fit a flow to, each with its log Z where it is known.

    p(x) = p̃(x) / Z,    Z = ∫ p̃(x) dx

A target is any callable ``log_prob(x) -> (batch,)`` on a (batch, D) tensor (conditional ones take
``(x, context)``). The built-in ones are :class:`Target` objects that also carry their dimension
and ``log_z`` (``None`` where it is not known). :func:`load_target` reads a user's
``path.py:function``; :func:`checked_log_prob` refuses, in one line naming the target, a log-density
that raises, has the wrong shape or is NaN.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from flowforge.errors import FlowforgeError

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Target:
    """A named unnormalised log-density of ``dim`` features and its ``log_z`` (None: unknown).

    ``modes`` (an (M, D) tensor, optional) marks the centres whose coverage is reported (with
    ``mode_mass``, p's share of each, when they differ; equal shares otherwise), ``box`` a
    square [−box, box]² that holds essentially all the mass of a 2-D target (for its figures), and
    ``scale`` its spread per coordinate about the origin (the flow's fixed first layer divides by
    it); ``None``, a target of unknown placement, is searched for by :func:`fit`."""
    name: str
    dim: int
    log_prob: Callable[[Tensor], Tensor]
    log_z: float | None = None
    modes: Tensor | None = None
    box: float = 4.0
    mode_mass: Tensor | None = None
    scale: float | tuple[float, ...] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        return self.log_prob(x)


def _mixture_centres() -> tuple[Tensor, Tensor]:
    """Eight well-separated centres in [−5, 5]² with unequal weights (fixed, so runs repeat)."""
    centres = torch.tensor([[-4.0, -4.0], [-4.0, 1.0], [-1.5, 4.0], [1.0, -1.5], [3.5, 4.0],
                            [4.5, -3.5], [0.5, 1.8], [-0.5, -4.5]])
    weights = torch.tensor([1.0, 2.0, 1.5, 1.0, 0.5, 1.0, 2.0, 1.0])
    return centres, weights


MIXTURE_SCALE = 0.5


def gaussian_mixture() -> Target:
    """Σ_k w_k N(x; μ_k, 0.5² I) with unnormalised weights: log Z = log Σ_k w_k exactly.

    >>> import torch
    >>> from flowforge.variational.targets import gaussian_mixture
    >>> t = gaussian_mixture(); round(t.log_z, 4), t(torch.zeros(3, 2)).shape
    (2.3026, torch.Size([3]))
    """
    centres, weights = _mixture_centres()

    def log_prob(x: Tensor) -> Tensor:
        c, w = centres.to(x), weights.to(x)
        sq = ((x[:, None, :] - c) ** 2).sum(-1) / MIXTURE_SCALE ** 2
        return torch.logsumexp(w.log() - 0.5 * sq, dim=1) - math.log(2 * math.pi * MIXTURE_SCALE ** 2)
    return Target("gmm", 2, log_prob, float(weights.sum().log()), centres, box=7.0, scale=3.0,
                  mode_mass=weights / weights.sum())


def _radial_integral(radius: float, scale: float) -> float:
    """∫₀^∞ r exp(−(r − R)² / 2s²) dr = s² e^{−R²/2s²} + R s √(π/2) (1 + erf(R / s√2)), exactly."""
    return scale ** 2 * math.exp(-radius ** 2 / (2 * scale ** 2)) + radius * scale * math.sqrt(math.pi / 2) * (
        1 + math.erf(radius / (scale * math.sqrt(2))))


def ring_mixture(rings: int = 2) -> Target:
    """normflows' ring mixture: log Σ_i exp(−(|x| − 2i/n)² / 2s²), s = 1/(4n), i = 1…n; Z exact
    (each ring's radial integral in closed form, times 2π).

    >>> from flowforge.variational.targets import ring_mixture
    >>> t = ring_mixture(); abs(t.log_z - 1.7760) < 1e-3
    True
    """
    scale, radii = 1 / 4 / rings, [2 / rings * (i + 1) for i in range(rings)]

    def log_prob(x: Tensor) -> Tensor:
        r = x.norm(dim=1, keepdim=True)
        return torch.logsumexp(-((r - x.new_tensor(radii)) ** 2) / (2 * scale ** 2), dim=1)
    log_z = math.log(2 * math.pi * sum(_radial_integral(r, scale) for r in radii))
    return Target("ring", 2, log_prob, log_z, box=3.0, scale=1.0)


def _moons_log_prob(x: Tensor) -> Tensor:
    a = x[:, 0].abs()
    return (-0.5 * ((x.norm(dim=1) - 2) / 0.2) ** 2 - 0.5 * ((a - 2) / 0.3) ** 2
            + torch.log1p(torch.exp(-4 * a / 0.09)))


def _polar_log_z(log_prob: Callable[[Tensor], Tensor], r_max: float, n: int = 1000) -> float:
    """log ∫ p̃ by the midpoint rule in polar coordinates (r ∈ [0, r_max], θ ∈ [0, 2π)), float64."""
    r = (torch.arange(n, dtype=torch.float64) + 0.5) * (r_max / n)
    theta = (torch.arange(n, dtype=torch.float64) + 0.5) * (2 * math.pi / n)
    rr, tt = torch.meshgrid(r, theta, indexing="ij")
    points = torch.stack([rr * tt.cos(), rr * tt.sin()], -1).reshape(-1, 2)
    log_cell = torch.log(rr.reshape(-1) * (r_max / n) * (2 * math.pi / n))
    return float(torch.logsumexp(log_prob(points) + log_cell, 0))


def two_moons() -> Target:
    """normflows' two-moons energy: −½((|x| − 2)/0.2)² + log(e^{−½((x₁−2)/0.3)²} + e^{−½((x₁+2)/0.3)²});
    log Z by polar quadrature (a million cells; the ring holds all the mass at |x| ≤ 4).

    >>> from flowforge.variational.targets import two_moons
    >>> abs(two_moons().log_z - 0.8042) < 1e-3
    True
    """
    return Target("moons", 2, _moons_log_prob, _polar_log_z(_moons_log_prob, 4.0),
                  torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), box=3.5, scale=1.0)


def banana(curvature: float = 1.0, spread: float = 4.0) -> Target:
    """The banana (a Rosenbrock density): x₁ ~ N(0, 1), x₂ | x₁ ~ N(b x₁², 1/c), in unnormalised form
    −½ x₁² − ½ c (x₂ − b x₁²)²: log Z = log 2π − ½ log c exactly (b = ``curvature``, c = ``spread``).

    >>> from flowforge.variational.targets import banana
    >>> round(banana().log_z, 4)
    1.1447
    """
    def log_prob(x: Tensor) -> Tensor:
        return -0.5 * x[:, 0] ** 2 - 0.5 * spread * (x[:, 1] - curvature * x[:, 0] ** 2) ** 2
    # x₂'s arm reaches x₁² (x₂ > 4 holds 5% of the mass): at scale 3 it lies within a spline flow's ±4
    return Target("banana", 2, log_prob, LOG_2PI - 0.5 * math.log(spread), box=6.0,
                  scale=(1.0, max(1.0, 3.0 * curvature)))


def funnel(dim: int = 10, scale: float = 3.0) -> Target:
    """Neal's funnel (Neal 2003, "Slice sampling", arXiv:physics/0009028): v ~ N(0, 3²) and
    x_i | v ~ N(0, eᵛ) for the other D − 1 coordinates; normalised, so log Z = 0.

    >>> import torch
    >>> from flowforge.variational.targets import funnel
    >>> funnel().log_z, funnel()(torch.zeros(2, 10)).shape
    (0.0, torch.Size([2]))
    """
    if dim < 2:
        raise FlowforgeError(f"--target funnel needs --dim of at least 2, got {dim}")

    def log_prob(x: Tensor) -> Tensor:
        v, rest = x[:, 0], x[:, 1:]
        log_v = -0.5 * (v / scale) ** 2 - math.log(scale) - 0.5 * LOG_2PI
        log_rest = -0.5 * (rest ** 2).sum(1) * torch.exp(-v) - 0.5 * (dim - 1) * (v + LOG_2PI)
        return log_v + log_rest
    return Target("funnel", dim, log_prob, 0.0, scale=1.0)


def _double_well_factor_log_z(side: int = 0) -> float:
    """log ∫ exp(−x⁴ + 6x² + ½x) dx by the midpoint rule on [−6, 6] (the tails beyond are < e⁻⁹⁰⁰);
    ``side`` −1 or 1: over x < 0 or x > 0 only (one well's mass)."""
    x = torch.linspace(-6, 6, 200_001, dtype=torch.float64)
    log_f = torch.where(x * side < 0, -math.inf, -x ** 4 + 6 * x ** 2 + 0.5 * x)
    return float(torch.logsumexp(log_f, 0) + math.log(float(x[1] - x[0])))


def double_well(dim: int = 4) -> Target:
    """A double-well Boltzmann density of D/2 particles' (x, y) coordinates, each particle in the
    potential U(x, y) = x⁴ − 6x² − ½x + ½y² (the many-well of Midgley et al. 2023, "Flow Annealed
    Importance Sampling Bootstrap", arXiv:2208.01893): log p̃ = −Σ U, 2^{D/2} modes; log Z exact up to
    the 1-D quadrature of the quartic factor (the y factor is Gaussian).

    >>> from flowforge.variational.targets import double_well
    >>> t = double_well(4); len(t.modes), round(t.log_z, 3)
    (4, 20.587)
    """
    if dim < 2 or dim % 2:
        raise FlowforgeError(f"--target double-well needs an even --dim of at least 2 (x, y per particle), got {dim}")
    particles = dim // 2
    wells = torch.tensor([-1.7, 1.7])
    modes = torch.cartesian_prod(*[wells] * particles).reshape(-1, particles)
    centres = torch.zeros(len(modes), dim)
    centres[:, 0::2] = modes

    def log_prob(x: Tensor) -> Tensor:
        u, v = x[:, 0::2], x[:, 1::2]
        return (-u ** 4 + 6 * u ** 2 + 0.5 * u - 0.5 * v ** 2).sum(1)
    log_z = particles * (_double_well_factor_log_z() + 0.5 * LOG_2PI)
    # the tilt ½x makes the right well e^1.7 times as likely: p's share of each mode, particle by particle
    well_mass = torch.tensor([_double_well_factor_log_z(-1), _double_well_factor_log_z(1)]).softmax(0)
    mass = torch.cartesian_prod(*[well_mass] * particles).reshape(-1, particles).prod(1)
    return Target("double-well", dim, log_prob, log_z, centres, box=3.0, mode_mass=mass.float(), scale=1.0)


BUILT_IN: dict[str, Callable[..., Target]] = {
    "gmm": gaussian_mixture, "moons": two_moons, "ring": ring_mixture, "banana": banana,
    "funnel": funnel, "double-well": double_well}
RESIZABLE = {"funnel", "double-well"}  # take --dim; the others are 2-D


def built_in_target(name: str, dim: int | None = None) -> Target:
    """A built-in target by name, at ``dim`` where it takes one (funnel, double-well)."""
    if name not in BUILT_IN:
        raise FlowforgeError(f"--target {name!r} is neither a built-in target ({', '.join(BUILT_IN)}) "
                             "nor a path.py:function")
    if name in RESIZABLE:
        return BUILT_IN[name](dim) if dim is not None else BUILT_IN[name]()
    target = BUILT_IN[name]()
    if dim is not None and dim != target.dim:
        raise FlowforgeError(f"--target {name} is {target.dim}-dimensional, not --dim {dim}")
    return target


def is_file_target(spec: str) -> bool:
    return ".py:" in spec


def absolute_target(spec: str) -> str:
    """``spec`` with a file target's path made absolute (so ``fit --resume`` finds it from any
    directory); a built-in name unchanged.

    >>> from flowforge.variational.targets import absolute_target
    >>> absolute_target("gmm")
    'gmm'
    """
    if not is_file_target(spec):
        return spec
    path_text, _, name = spec.rpartition(":")
    return f"{Path(path_text).absolute()}:{name}"


def target_file_digest(spec: str) -> str | None:
    """The SHA-256 of a file target's file (None for a built-in, or a file no longer there): what
    a run records, so a changed file is noticed before it is fitted to or reported as the same."""
    from flowforge.data.files import file_sha256

    if not is_file_target(spec):
        return None
    path = Path(spec.rpartition(":")[0])
    return file_sha256(path) if path.is_file() else None


def load_target(spec: str, dim: int | None = None) -> Target:
    """A built-in target by name, or ``path.py:function`` from the user's own file (imported: it is
    the user's code, run because they named it). Its log Z is unknown; ``dim`` must be given.

    >>> from flowforge.variational import load_target
    >>> load_target("banana").dim
    2
    """
    if not is_file_target(spec):
        return built_in_target(spec, dim)
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise FlowforgeError(f"target {spec}: no such file {path}")
    module_name = f"flowforge_user_target_{abs(hash(str(path.resolve())))}"
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # as `python path.py` would: the file imports its neighbours
    try:
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        with contextlib.redirect_stdout(sys.stderr):  # what it prints is not flowforge's output (eval --json)
            loader.loader.exec_module(module)
    except SystemExit as done:
        raise FlowforgeError(f"target {spec}: importing {path} called sys.exit({done.code!r})") from None
    except Exception as err:  # noqa: BLE001 - the user's file: any failure is theirs, said in one line
        raise FlowforgeError(f"target {spec}: importing {path} failed ({type(err).__name__}: {err})") from None
    finally:
        sys.path.remove(folder)
    function = getattr(module, name, None)
    if not callable(function):
        raise FlowforgeError(f"target {spec}: {path} defines no function {name!r}")
    if dim is None:
        raise FlowforgeError(f"target {spec}: give its dimension (--dim; load_target(spec, dim) in Python)")
    return Target(spec, dim, _PrintingToStderr(function))


class TargetExit(Exception):
    """A user's target function called sys.exit: its error, not an exit of flowforge's."""


class _PrintingToStderr:
    """A user's function whose prints go to stderr (flowforge's stdout carries its results) and whose
    sys.exit is an error like any other it raises. A class, not a closure: it pickles with the function."""

    def __init__(self, function: Callable):
        self.function = function
        self.__name__ = getattr(function, "__name__", "log_prob")

    def __call__(self, *args):
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return self.function(*args)
        except SystemExit as done:
            raise TargetExit(f"sys.exit({done.code!r})") from None


def target_name(target: Callable) -> str:
    """What messages call a target: a :class:`Target`'s name, else the function's."""
    return getattr(target, "name", None) or getattr(target, "__name__", "the target")


def checked_log_prob(target: Callable, x: Tensor, context: Tensor | None = None, name: str | None = None,
                     *, fitting: bool = False, differentiable: bool = False) -> Tensor:
    """``target``'s log p̃(x) (or log p̃(x | context)), refused in one line naming the target when it
    raises, is not a (batch,) tensor or holds NaN or +inf. −inf (no mass there) is allowed when
    diagnosing, refused when ``fitting`` (a flow has mass everywhere: its fit needs a finite value at
    every draw); ``differentiable``: the loss differentiates log p̃ at the draws, so it must carry a
    gradient with respect to x (not computed outside torch's autograd).

    >>> import torch
    >>> from flowforge.variational.targets import checked_log_prob, banana
    >>> checked_log_prob(banana(), torch.zeros(4, 2)).shape
    torch.Size([4])
    """
    name = name or target_name(target)
    try:
        values = target(x) if context is None else target(x, context)
    except FlowforgeError:
        raise
    except TargetExit as err:
        raise FlowforgeError(f"target {name} called {err}") from None
    except Exception as err:  # noqa: BLE001 - a user's function may raise anything
        if x.requires_grad and "requires grad" in str(err):  # x.numpy(), or x changed in place
            raise FlowforgeError(_no_gradient(name)) from None
        raise FlowforgeError(f"target {name} raised {type(err).__name__}: {str(err)[:200]}") from None
    if not torch.is_tensor(values):
        raise FlowforgeError(f"target {name} returned a {type(values).__name__}, not a torch tensor: write it in torch "
                             f"operations, returning one log-density per row, shape ({x.shape[0]},)")
    if values.shape != x.shape[:1]:
        raise FlowforgeError(f"target {name} returned {tuple(values.shape)} for a batch of shape {tuple(x.shape)}; "
                             f"it must return one log-density per row, shape ({x.shape[0]},)")
    if not values.is_floating_point():
        raise FlowforgeError(f"target {name} returned {values.dtype} values; return floating-point log-densities")
    if not bool(torch.isfinite(values).all()):  # one reduction on the hot path; the reason only when needed
        _refuse_non_finite(values, name, fitting)
    if differentiable and x.requires_grad and torch.is_grad_enabled() and not values.requires_grad:
        raise FlowforgeError(_no_gradient(name))  # it would fit q to nothing
    return values.to(x.dtype)


def _refuse_non_finite(values: Tensor, name: str, fitting: bool) -> None:
    """Refuse NaN and +inf always, and −inf when ``fitting``: a flow has mass everywhere, so KL(q‖p)
    would be infinite and no ELBO finite."""
    for bad, what in ((torch.isnan(values), "NaN"), (torch.isposinf(values), "+inf")):
        if bad.any():
            raise FlowforgeError(f"target {name} returned {what} for {int(bad.sum())} of {len(values)} points")
    outside = torch.isneginf(values)
    if fitting and outside.any():
        raise FlowforgeError(
            f"target {name} returned -inf at {int(outside.sum())} of {len(values)} draws of the flow: a flow has mass "
            "everywhere, so it can be fitted only to a log-density finite at every point; give such points a "
            "finite low value, or fit the target in unbounded coordinates (e.g. the log of a positive parameter)")


def _no_gradient(name: str) -> str:
    return (f"target {name} returned log-densities without a gradient with respect to x (computed outside "
            "torch's autograd: detached, through NumPy or .item(), or x changed in place); write it in torch "
            "operations, or fit by the forward KL (--objective forward-kl; objective='forward-kl' in Python), "
            "which needs only its values")
