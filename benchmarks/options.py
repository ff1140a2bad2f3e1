"""What the benchmark scripts share in reading their command lines."""

from __future__ import annotations

import argparse


def names_option(parser: argparse.ArgumentParser, option: str, text: str, allowed: list[str]) -> list[str]:
    """The names a comma-separated ``option`` gives, in order and once each; a name not in ``allowed``,
    or none at all, is refused in one line (``parser.error``, exit status 2) before anything is measured."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        parser.error(f"{option}: {'unknown ' + ', '.join(unknown) if unknown else 'none given'}; "
                     f"choose from {', '.join(allowed)}")
    return names
