"""argparse ``type=`` validators shared by the subcommands: bad values are refused at parse time (exit 2, one
line naming the option), before any model is loaded or exported. Imports nothing heavy."""
from __future__ import annotations

import argparse
import math

from .errors import OutputError


def positive_int(text: str) -> int:
    """An integer >= 1 (``--max-batch``, ``--iters``, ``--batch``)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def nonneg_int(text: str) -> int:
    """An integer >= 0 (``bench --warmup``)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def threshold(text: str) -> float:
    """A finite float >= 0 (``--early-exit``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def writable_file(text: str) -> str:
    """A file path whose directory exists and is writable, or can be created (``--json``, ``--plot``)."""
    from .fsio import check_writable_file

    try:
        check_writable_file(text, "")
    except OutputError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None
    return text
