"""The progress bar: tqdm's notebook widget where Jupyter can draw one, its text bar elsewhere.

``tqdm.auto`` in a notebook without ipywidgets warns ("IProgress not found") and then falls back to
the text bar anyway; choosing here gives the same bar without the warning in every notebook run.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ipywidgets") is None:
    from tqdm.std import tqdm
else:  # pragma: no cover - ipywidgets is not a dependency
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
