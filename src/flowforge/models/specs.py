"""Model families, each described once: its builder, the kind of input it takes, its recipe (the
trainer defaults that make ``flowforge train --model M --data D`` work with no other option),
its objectives, its evaluation metrics and its figures.

The loop, evaluation, plots and command line ask a :class:`ModelSpec` instead of checking a
model's name, attributes or the data's shape. This module imports neither torch nor the
builders (``flowforge --help`` reads it): a builder is imported when a model is first built.

>>> from flowforge.models import SPECS
>>> from flowforge.models.specs import DataInfo
>>> spec = SPECS["glow"]
>>> spec.input_kind, spec.size_options["layers"]
('image', 'steps')
>>> recipe = spec.recipe(DataInfo(kind="image", rows=1437, shape=(1, 8, 8)))
>>> recipe["lr"] <= 1e-3 and recipe["model_options"]["levels"] >= 1
True
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

VECTOR, IMAGE = "vector", "image"


@dataclass(frozen=True)
class DataInfo:
    """What a recipe may depend on: ``kind`` ("toy", "table" or "image"), the training rows, one
    sample's shape, for images the bit depth of their pixel levels (digits: 4, MNIST: 8), and the
    size of the context a conditional run's data carry (0: none)."""
    kind: str
    rows: int
    shape: tuple[int, ...]
    bits: int | None = None
    context_dim: int = 0


Recipe = Callable[[DataInfo], dict[str, Any]]
# each input kind's natural data, as ``train --help`` shows the recipes: (label, what the recipe sees)
NATURAL_DATA = {"vector": ("2-D toys", DataInfo("toy", 1000, (2,))),
                "image": ("8x8 images", DataInfo("image", 1437, (1, 8, 8), bits=4))}


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    Args:
        name: the ``--model`` name.
        builder: ``"module:function"``, the builder, called as ``builder(dim_or_shape, **options)``.
        input_kind: ``"vector"`` (the builder takes D) or ``"image"`` (it takes (C, H, W)).
        summary: one line for ``--help``.
        recipe: the trainer defaults (TrainConfig fields, and ``model_options``) for given data.
        size_options: the command line's generic ``--layers/--hidden/--depth`` → the builder's keyword.
        objectives: what ``--objective`` may be (the first is the default).
        metrics: what evaluation reports beside the NLL (``bits_per_dim``, ``nfe``).
        figures: ``"module:function"`` drawing the family's own figures, ``f(flow, data, out) -> [Path]``.
        unrecorded_options: the options a config saved before they were recorded was trained with.
        objective_options: builder options that act only under one objective (objective → names).
        added_options: builder options added since config format 3 (which recorded every option),
            with the value a run saved without them was built with.
        standardized_options: builder options that act only on standardised data (a recipe's are
            left out under ``--no-standardize``).
    """
    name: str
    builder: str
    input_kind: str
    summary: str
    recipe: Recipe
    size_options: Mapping[str, str] = field(default_factory=dict)
    objectives: tuple[str, ...] = ("mle",)
    metrics: tuple[str, ...] = ()
    figures: str | None = None
    unrecorded_options: Mapping[str, Any] = field(default_factory=dict)
    added_options: Mapping[str, Any] = field(default_factory=dict)
    objective_options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    standardized_options: tuple[str, ...] = ()

    @property
    def images(self) -> bool:
        return self.input_kind == IMAGE

    def builder_function(self) -> Callable[..., Any]:
        return _resolve(self.builder)

    def build(self, dim: int | tuple[int, ...], **options: Any):
        """The flow for data of ``dim`` features (vectors) or of shape ``dim`` (images)."""
        if isinstance(dim, (tuple, list)) and not self.images:
            images = ", ".join(name for name, spec in SPECS.items() if spec.images)
            raise ValueError(f"{self.name} models vectors, not images of shape {tuple(dim)}; choose from {images}")
        return self.builder_function()(tuple(dim) if isinstance(dim, list) else dim, **options)

    def builder_options(self) -> dict[str, Any]:
        """Every keyword the builder takes, with its default (recorded in config.json), but
        ``standardize``: a config holds that as a trainer field of its own."""
        parameters = list(inspect.signature(self.builder_function()).parameters.values())[1:]
        return {p.name: p.default for p in parameters
                if p.default is not inspect.Parameter.empty and p.name != "standardize"}

    def idle_options(self, objective: str, options: Mapping[str, Any]) -> dict[str, str]:
        """The options set away from their defaults that ``objective`` never uses, each with the
        objective that does (FFJORD's trace estimator and RNODE penalties act in likelihood training,
        not in flow matching)."""
        defaults = self.builder_options()
        return {name: used_by for used_by, names in self.objective_options.items() if used_by != objective
                for name in names if name in options and options[name] != defaults.get(name)}

    def figure_function(self) -> Callable[..., Any] | None:
        return _resolve(self.figures) if self.figures else None


def _resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# ---- recipes -----------------------------------------------------------------------------------
# Each figure in a comment was measured; docs/recipes.md has the tables.

def _vector_recipe(toy: dict[str, Any], table: Callable[[str], dict[str, Any]],
                   many_rows_lr: float | None = None, small_table_objective: str | None = None) -> Recipe:
    """A vector family's recipe: ``toy`` for the 2-D sets; for a user's table, :func:`table_recipe`
    with the family's model options ``table(tier)`` (its own learning rate from MANY_ROWS rows on, and
    its own objective under 2,000 rows when ``small_table_objective`` is given)."""
    def recipe(info: DataInfo) -> dict[str, Any]:
        if info.kind == "toy":
            return dict(toy)
        values = table_recipe(info)
        tier = values.pop("tier")
        lr = {"lr": many_rows_lr} if many_rows_lr and info.rows >= MANY_ROWS else {}
        objective = {k: v for k, v in toy.items() if k == "objective"}
        if small_table_objective and tier in ("tiny", "small"):
            objective = {"objective": small_table_objective}
        return {**values, **lr, **objective, "model_options": table(tier)}
    return recipe


MANY_ROWS = 5_000  # from here on a table trains without noise (and MAF faster): it memorises slowly


def table_recipe(info: DataInfo) -> dict[str, Any]:
    """A user's table of ``rows`` × ``features``: evaluation every epoch, early stopping on the
    validation NLL (best weights kept), and a model, noise and budget chosen by the rows.

    A flow memorises a few hundred rows within a few epochs: wine (142 training rows × 13) scored
    its best validation NLL after 50 steps and 16× worse after 3,000. Measured (docs/recipes.md):
    under 300 rows a small model with strong noise beat the fitted Gaussian on wine at 5 of 5
    seeds; 300–2,000 rows (breast cancer, 455 × 30) and above (MINIBOONE, 2,627 × 43) at 3 of 3.
    The 300-row threshold lies between the two small tables measured; it is not a law.
    From 5,000 rows on, no noise, for every family: it blurs peaked conditionals more than it guards
    against memorising (measured with MAF only, 30 s: MINIBOONE's 2,955 rows 16.84 nats with noise 0.03, 17.33 without;
    SLCP's 9,000 rows a gap to the truth of 2.97 nats without, 3.60 with; docs/tabular.md).
    """
    batch = int(min(256, max(32, info.rows // 4)))
    epoch = max(1, -(-info.rows // batch))  # steps per epoch
    tier = "tiny" if info.rows < 300 else "small" if info.rows < 2_000 else "large"
    noise, lr, patience = {"tiny": (0.3, 3e-3, 20), "small": (0.1, 1e-3, 10), "large": (0.03, 7e-4, 20)}[tier]
    noise = 0.0 if info.rows >= MANY_ROWS else noise
    return {"batch_size": batch, "eval_every": epoch, "patience": patience,
            "steps": int(min(20_000, max(1_000, 300 * epoch))), "lr": lr, "warmup_steps": min(100, epoch * 2),
            "train_noise": noise, "weight_decay": 0.2, "tier": tier}


def _image_recipe(small: dict[str, Any], large: dict[str, Any]) -> Recipe:
    """Images of up to 16×16 pixels (digits) take ``small``; larger ones (MNIST) ``large``; the
    model's pixel depth is the data's (digits have 4 bits: a uniform model scores 4 bits/dim)."""
    def recipe(info: DataInfo) -> dict[str, Any]:
        chosen = small if max(info.shape[1:]) <= 16 else large
        bits = {"bits": info.bits} if info.bits else {}
        return {**chosen, "model_options": {**chosen["model_options"], **bits}}
    return recipe


REALNVP_TOY = {"steps": 3000, "lr": 7e-4, "batch_size": 256, "eval_every": 200, "train_noise": 0.03,
               # 12 x 3x128 beat the book's 6 x 4x256 at 8 of 10 seeds on moons (docs/moons_defaults.md)
               "model_options": {"num_layers": 12, "hidden": 128, "depth": 3}}
REALNVP_TABLE = {"tiny": {"num_layers": 8, "hidden": 16, "depth": 2}, "small": {"num_layers": 6, "hidden": 64, "depth": 2},
                 "large": {"num_layers": 10, "hidden": 128, "depth": 2}}
SPLINE_TOY = {"steps": 3000, "lr": 7e-4, "batch_size": 256, "eval_every": 200, "train_noise": 0.03,
              "model_options": {"num_layers": 5, "hidden": 128, "depth": 2}}
# MAF on the 2-D sets keeps the book's scale bound: at 3 (its tables' default) moons scored 1.674 instead of
# 1.196, two test points past a moon's tip taking NLL 3,895 and 839 (a layer may stretch e³: the tails thin out)
MAF_TOY = {**SPLINE_TOY, "model_options": {**SPLINE_TOY["model_options"], "scale_bound": 1.0}}
# pinwheel, 3 seeds: test NLL 1.623 / 1.653 / 1.638 in 10-13 CPU seconds (the old defaults: 2.241).
# Tables under 2,000 rows train by likelihood: flow matching at the table's learning rate did not beat the
# fitted Gaussian (seed 0: a 600 × 4 table 5.117 against 2.965, wine 17.283 against 15.933, breast cancer
# 38.04 against 10.63); by likelihood 1.993 (75 s) and 13.870 (134 s, RealNVP's figure); docs/recipes.md
FFJORD_TOY = {"steps": 1200, "lr": 4e-2, "batch_size": 1024, "eval_every": 400, "warmup_steps": 60,
              "weight_decay": 0.0, "ema_decay": 0.999, "train_noise": 0.0, "objective": "flow-matching",
              "model_options": {"hidden": 64, "depth": 3}}
# Tables of WIDE_TABLE columns or more start from the fitted Gaussian (a Whiten layer; the training noise is shaped
# like the data behind it) and train by likelihood with Hutchinson's trace, waiting WIDE_TABLE_PATIENCE steps for a
# better validation NLL (it stays flat for the first ~60). Test NLL at seeds 0-2 against the Gaussian's: breast
# cancer (30 columns) 7.20 / 3.16 / 52.51 against 10.63 / 7.44 / 56.03 in 89-92 s (it had lost: 20.75 on
# validation), MINIBOONE (43) 34.35 / 34.47 against 37.99 / 39.45 in 316 s (flow matching: 37.99); wine (13)
# lost to the Gaussian when whitened (15.95 against 15.93; 13.87 as it is); docs/recipes.md
WIDE_TABLE, WIDE_TABLE_PATIENCE = 20, 300
FFJORD_WIDE_TABLE = {"whiten": True, "trace": "hutchinson"}


_ffjord_vector_recipe = _vector_recipe(FFJORD_TOY, lambda tier: {"hidden": 64, "depth": 3}, small_table_objective="mle")


def _ffjord_recipe(info: DataInfo) -> dict[str, Any]:
    values = _ffjord_vector_recipe(info)
    if info.kind == "table" and info.shape[-1] >= WIDE_TABLE:
        patience = max(values["patience"], -(-WIDE_TABLE_PATIENCE // values["eval_every"]))
        values.update(objective="mle", patience=patience, model_options={**values["model_options"], **FFJORD_WIDE_TABLE})
    return values


# digits (4 bits), 1,500 steps: 2.183 / 2.287 / 2.149 bits/dim at seeds 0-2, 67-74 CPU seconds
GLOW_SMALL = {"steps": 1500, "lr": 1e-3, "batch_size": 64, "eval_every": 100, "warmup_steps": 100,
              "model_options": {"levels": 2, "steps": 8, "hidden": 64, "depth": 2}}
# MNIST (8 bits), 1,500 steps: 2.313 bits/dim at seed 0 in 166 s on one thread; 28 = 4 × 7, so 2 levels
GLOW_LARGE = {"steps": 1500, "lr": 1e-3, "batch_size": 64, "eval_every": 500, "warmup_steps": 200,
              "model_options": {"levels": 2, "steps": 8, "hidden": 64, "depth": 2}}
# digits (4 bits), 1,500 steps: 2.004 / 2.011 bits/dim at seeds 0-1, 53 CPU seconds
REALNVP_IMAGE_SMALL = {"steps": 1500, "lr": 1e-3, "batch_size": 64, "eval_every": 100, "warmup_steps": 100,
                       "model_options": {"scales": 2, "hidden": 64, "depth": 2}}
REALNVP_IMAGE_LARGE = {"steps": 1500, "lr": 1e-3, "batch_size": 64, "eval_every": 500, "warmup_steps": 200,
                       "model_options": {"scales": 2, "hidden": 64, "depth": 2}}


def _spline_table(tier: str) -> dict[str, Any]:
    return {"num_layers": 4 if tier != "large" else 5, "hidden": 64 if tier != "large" else 128, "depth": 2}


_SIZES = {"layers": "num_layers", "hidden": "hidden", "depth": "depth"}

SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("realnvp", "flowforge.models.realnvp:RealNVP", VECTOR,
              "RealNVP: affine couplings with alternating masks (the book's model)",
              _vector_recipe(REALNVP_TOY, REALNVP_TABLE.__getitem__), _SIZES,
              unrecorded_options={"num_layers": 6, "hidden": 256, "depth": 4}, added_options={"scale_bound": 1.0}),
    ModelSpec("nsf", "flowforge.models.nsf:NSF", VECTOR,
              "neural spline flow: rational-quadratic spline couplings (or autoregressive=true)",
              _vector_recipe(SPLINE_TOY, _spline_table), _SIZES),
    ModelSpec("maf", "flowforge.models.nsf:MAF", VECTOR, "masked autoregressive flow (MADE layers)",
              # 2e-3 from MANY_ROWS rows (30 s, seed 0): SLCP's 90,000 a gap of 1.37 nats (7e-4: 2.05); on MINIBOONE's
              # 2,955 the best weights came within 6 s at 2e-3 and seed 2 scored 35.9 (rerun 18.1; 7e-4: 17.0): not below
              _vector_recipe(MAF_TOY, _spline_table, 2e-3), _SIZES, added_options={"scale_bound": 1.0}),
    ModelSpec("ffjord", "flowforge.models.ffjord:FFJORD", VECTOR,
              "FFJORD: a continuous-time flow (an ODE), trained by flow matching or likelihood",
              _ffjord_recipe, _SIZES, objectives=("mle", "flow-matching"), metrics=("nfe",),
              figures="flowforge.plots.ffjord:ffjord_figures", unrecorded_options={"fm_time_power": 1.0},
              added_options={"whiten": False}, standardized_options=("whiten",),
              objective_options={"mle": ("trace", "noise", "adjoint", "kinetic", "jacobian")}),
    ModelSpec("glow", "flowforge.models.glow:Glow", IMAGE,
              "Glow: actnorm, invertible 1x1 convolutions and affine couplings at several scales",
              _image_recipe(GLOW_SMALL, GLOW_LARGE), {"layers": "steps", "hidden": "hidden", "depth": "depth"},
              metrics=("bits_per_dim",)),
    ModelSpec("realnvp-image", "flowforge.models.realnvp_image:RealNVPImage", IMAGE,
              "RealNVP for images: checkerboard and channel couplings at several scales",
              _image_recipe(REALNVP_IMAGE_SMALL, REALNVP_IMAGE_LARGE),
              {"layers": "scales", "hidden": "hidden", "depth": "depth"}, metrics=("bits_per_dim",)),
)}


def spec_of(name: str) -> ModelSpec:
    """The registered family ``name``; an unknown name is refused with the list of known ones."""
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(SPECS))}")
    return SPECS[name]
