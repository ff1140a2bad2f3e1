"""User-facing errors: the command line prints their message as one line and exits non-zero."""


class FlowforgeError(ValueError):
    """Bad input from the user (data, options, run directories), said in one sentence."""
