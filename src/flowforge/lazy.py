"""Packages whose public names are imported on first use (PEP 562), so that reading a light
module of a package (the model specs, the config) does not import torch: ``flowforge --help``
answers in a fraction of a second."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps a public name to the module
    (relative to the package, or absolute) that defines it; a name equal to its module is the module."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name], package)
        return module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
