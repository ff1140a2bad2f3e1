"""Checks for values that come from outside: options, config.json and weights of a run directory.

A run directory someone sends you is untrusted input. Before anything is built its config values
are checked against types and sane ranges, the model's size is estimated without allocating it
(large tensors go to PyTorch's ``meta`` device) and refused above ``--max-params``; loaded tensors
must match the model's names, shapes and dtypes, and buffers must satisfy their invariants.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from flowforge.errors import FlowforgeError
from flowforge.training.device import dtype_name
from flowforge.training.fields import MAX_PARAMS, TRAIN_FIELDS, _shown

SMALL_TENSOR = 4096  # elements; larger tensors are put on the meta device while the model is sized
STRUCTURE_LIMITS = {"num_layers": 1024, "steps": 1024, "depth": 64, "levels": 8, "scales": 8,
                    "solver_steps": 100_000, "hidden": 2 ** 31}
MAX_INT_OPTION = 2 ** 31
MAX_DIM = 1_000_000
MAX_IMAGE_SIDE = 4096
MAX_CHANNELS = 64


def check_train_values(values: dict[str, Any], label: Callable[[str], str]) -> None:
    """Refuse the first field of ``values`` that has the wrong type or range; ``label(field)`` names it
    in the message (``--steps`` for an option, ``config.json: train.steps`` for a file)."""
    for name, value in values.items():
        field = TRAIN_FIELDS.get(name)
        problem = field.problem(value) if field else None
        if problem:
            hint = ("; for rows in memory, save them with numpy.save and give the .npy path, or train in a loop "
                    "of your own (README)" if name == "data" and hasattr(value, "shape") else "")
            raise FlowforgeError(f"{label(name)} {problem}{hint}")
    check_model_options(values.get("model_options") or {}, label)


def check_model_options(options: dict[str, Any], label: Callable[[str], str]) -> None:
    """Model options are JSON scalars (or a list of them, e.g. a mask) with bounded sizes."""
    for key, value in options.items():
        items = value if isinstance(value, list) else [value]
        where = label(f"model_options.{key}")
        if len(items) > MAX_DIM or not all(v is None or isinstance(v, (bool, int, float, str)) for v in items):
            raise FlowforgeError(f"{where} must be a number, string, true/false or a list of them")
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise FlowforgeError(f"{where} must be finite, got {item}")
            if isinstance(item, int) and not isinstance(item, bool):
                limit = STRUCTURE_LIMITS.get(key, MAX_INT_OPTION)
                if abs(item) > limit:
                    raise FlowforgeError(f"{where} is {item}, above the limit of {limit:,}")


def check_data_shape(dim: Any, source: str) -> int | tuple[int, ...]:
    """A config's ``dim``: D features (1…10⁶) or an image shape [C, H, W] of sane sizes."""
    if isinstance(dim, int) and not isinstance(dim, bool) and 1 <= dim <= MAX_DIM:
        return dim
    if (isinstance(dim, list) and len(dim) == 3 and all(isinstance(d, int) and not isinstance(d, bool) for d in dim)
            and 1 <= dim[0] <= MAX_CHANNELS and all(1 <= d <= MAX_IMAGE_SIDE for d in dim[1:])):
        return tuple(dim)
    raise FlowforgeError(f"{source}: 'dim' must be a number of features (1 to {MAX_DIM:,}) or an image shape "
                         f"[C, H, W] (C ≤ {MAX_CHANNELS}, H, W ≤ {MAX_IMAGE_SIDE}), got {_shown(dim)}")


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Create every tensor above :data:`SMALL_TENSOR` elements on the meta device (no memory);
    small ones (masks, indices, permutations) stay real, so constructors that inspect them still work."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None:
            sizes = args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else \
                [a for a in args if isinstance(a, int)]
            if all(isinstance(s, int) for s in sizes) and math.prod(sizes) > SMALL_TENSOR:
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


def count_parameters(build: Callable[[], torch.nn.Module]) -> int:
    """The number of parameters of the model ``build()`` returns, without allocating its large tensors."""
    try:
        with _LargeTensorsOnMeta():
            model = build()
    except (RuntimeError, NotImplementedError) as err:  # an operation the meta device lacks: sizes beyond reason
        raise FlowforgeError(f"cannot size the model ({str(err).splitlines()[0][:200]})") from None
    return sum(p.numel() for p in model.parameters())


def check_model_size(build: Callable[[], torch.nn.Module], max_params: int | None = None) -> None:
    """Refuse a model above ``max_params`` parameters (default: :data:`MAX_PARAMS`, which ``--max-params``
    sets) before it is built for real."""
    max_params = MAX_PARAMS.get() if max_params is None else max_params
    count = count_parameters(build)
    if count > max_params:
        raise FlowforgeError(f"the model has {count:,} parameters (about {_size(4 * count)} of float32 weights), "
                             f"above the limit of {max_params:,}; pass --max-params to raise it")


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def check_weights_file_size(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """A weights file far larger than the model's tensors is refused before it is read."""
    needed = sum(t.numel() * t.element_size() for t in expected.values())
    limit = 4 * needed + (1 << 20)  # a full checkpoint holds model, optimiser moments and EMA
    if path.is_file() and path.stat().st_size > limit:
        raise FlowforgeError(f"{path}: {path.stat().st_size:,} bytes, far more than the model's "
                             f"{needed:,} bytes of tensors; not this run's weights")


def tensor_mismatch(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` differs from ``expected`` in names, shapes or dtypes (None when it matches)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        return f"missing {missing[:3]}"
    if unexpected:
        return f"unexpected {unexpected[:3]}"
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape:
            return f"{key} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.dtype != want.dtype:
            return f"{key} holds {dtype_name(got.dtype)}, expected {dtype_name(want.dtype)}"
    return None


def _is_permutation(t: torch.Tensor) -> bool:
    return t.dim() == 1 and torch.equal(t.sort().values, torch.arange(t.numel(), device=t.device))


def _indices_match_mask(name: str, buffers: dict[str, torch.Tensor]) -> bool:
    mask = buffers.get("mask")
    if mask is None or mask.dtype != torch.bool:
        return True
    picked = mask if name == "cond_idx" else ~mask
    return torch.equal(buffers[name], picked.nonzero().flatten())


BUFFER_INVARIANTS: dict[str, tuple[str, Callable[[torch.Tensor, dict], bool]]] = {
    "std": ("must be positive", lambda t, b: bool((t > 0).all())),
    "perm": ("must be a permutation", lambda t, b: _is_permutation(t)),
    "inv_perm": ("must invert perm", lambda t, b: _is_permutation(t) and torch.equal(t, torch.argsort(b["perm"]))
                 if "perm" in b else _is_permutation(t)),
    "unshuffle": ("must be a permutation", lambda t, b: _is_permutation(t)),
    "cond_idx": ("must list the mask's conditioning features", lambda t, b: _indices_match_mask("cond_idx", b)),
    "trans_idx": ("must list the mask's transformed features", lambda t, b: _indices_match_mask("trans_idx", b)),
    "mask": ("must hold only 0s and 1s and pass some but not all features",
             lambda t, b: bool(((t == 0) | (t == 1)).all()) and 0 < int(t.sum()) < t.numel()),
    "sign_s": ("must hold only -1s and 1s", lambda t, b: bool((t.abs() == 1).all())),
    "lower_mask": ("must be the strictly lower triangle of ones",
                   lambda t, b: t.dim() == 2 and torch.equal(t, torch.ones_like(t).tril(-1))),
    "permutation": ("must be a permutation matrix",
                    lambda t, b: t.dim() == 2 and bool(((t == 0) | (t == 1)).all()) and bool((t.sum(0) == 1).all())
                    and bool((t.sum(1) == 1).all())),
}


def check_buffers(module: torch.nn.Module, source: Path | str) -> None:
    """Every tensor finite, and every buffer with a known invariant (positive scales, permutations,
    index lists and masks) satisfying it; the first fault is refused naming the tensor."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise FlowforgeError(f"{source}: holds non-finite weights ({name})")
    for prefix, sub in module.named_modules():
        buffers = {n: b for n, b in sub._buffers.items() if b is not None}
        for name, tensor in buffers.items():
            rule = BUFFER_INVARIANTS.get(name)
            if rule and not rule[1](tensor, buffers):
                raise FlowforgeError(f"{source}: {prefix + '.' if prefix else ''}{name} {rule[0]}")
