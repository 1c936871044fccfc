"""Progress bars: the one place that decides whether a bar is drawn (every tqdm in restyle-rt comes from here).

A bar is drawn only on a terminal: tqdm's ``disable=None`` turns it off when the stream is not a TTY, so logs
redirected to a file or a CI console get no carriage returns. ``restyle-rt --no-progress`` (or ``-q``) turns every
bar off (:func:`set_enabled`); a library caller turns one off with ``show=False``. Importing this module is light:
tqdm is imported when a bar is made.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator

_enabled = True  # False: `--no-progress` / `-q` for this command


def set_enabled(on: bool) -> bool:
    """Allow (True) or forbid (False) progress bars process-wide; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(on)
    return previous


def enabled() -> bool:
    """Whether bars may be drawn at all (they still need a terminal)."""
    return _enabled


def bar(iterable: Iterable | None = None, *, show: bool = True, **kw):
    """A tqdm bar on stderr (``tqdm.auto``: a widget in notebooks), off when forbidden or not on a terminal.

    Args:
        iterable: what to wrap, as for tqdm.
        show: the caller's own switch (e.g. a ``progress=`` argument); False never draws.
        **kw: tqdm's arguments (``total``, ``desc``, ``unit``, ...); ``file`` defaults to the current sys.stderr.
    """
    from tqdm.auto import tqdm

    kw.setdefault("file", sys.stderr)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=None if (show and _enabled) else True, **kw)


def write(msg: str) -> None:
    """Print one line to stderr without breaking a bar being drawn."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


@contextlib.contextmanager
def logging_redirected() -> Iterator[None]:
    """Route the root logger's console handler through ``tqdm.write`` for the body, so log lines do not break bars
    (tqdm's ``logging_redirect_tqdm``). Nothing when the root logger has no stdout/stderr handler: tqdm's helper
    would add one, printing what the application chose not to show."""
    console = any(
        isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr) for h in logging.root.handlers
    )
    if not console:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
