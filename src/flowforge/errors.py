"""User-facing errors and warnings: the command line prints each as one line."""

from __future__ import annotations

import warnings

# set by the --nproc launcher to a path a worker touches once it has said why it stopped (the launcher adds no line)
REPORTED_FILE = "FLOWFORGE_REPORTED_FILE"


class FlowforgeError(ValueError):
    """Bad input from the user (data, options, run directories), said in one sentence."""


class FlowforgeWarning(UserWarning):
    """Something the user should know that does not stop the command (printed as one line)."""


def warn(message: str) -> None:
    """Issue a :class:`FlowforgeWarning`; the command line prints it as ``flowforge: warning: ...``."""
    warnings.warn(message, FlowforgeWarning, stacklevel=2)
