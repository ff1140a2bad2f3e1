"""Checks of user-given numbers, each refusing a bad value in one sentence that names it."""

from __future__ import annotations

import math
import operator


def positive_finite(value: float, what: str) -> float:
    """``value`` as a float if it is a finite number > 0 (not a bool), else a ValueError naming ``what``.

    >>> from flowforge.checks import positive_finite
    >>> positive_finite(2, "the temperature")
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a finite positive number, got {value!r}")
    return float(value)


def whole_number(value: int, what: str, low: int = 1) -> int:
    """``value`` as an int if it is an integer >= ``low`` (not a bool), else a ValueError naming ``what``.

    >>> from flowforge.checks import whole_number
    >>> whole_number(0, "context_dim", low=0)
    0
    """
    try:  # any integer type: Python's, numpy's, a 0-d integer tensor
        number = operator.index(value)
    except TypeError:
        number = None
    if isinstance(value, bool) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool") or number is None \
            or number < low:
        raise ValueError(f"{what} must be a whole number >= {low}, got {value!r}")
    return number
