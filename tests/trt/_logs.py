"""Collects the engine-build and FP16-proxy log lines of the trt tests for the terminal summary."""

from __future__ import annotations

import contextlib
import logging

BUILD_LINES: list = []


class _Collect(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("built ") or "proxy parity" in msg:
            BUILD_LINES.append(msg)


logging.getLogger("restyle_rt").addHandler(_Collect(level=logging.INFO))


@contextlib.contextmanager
def info_logs():
    """Let restyle_rt INFO records through (to the collector) for a block, then restore the level."""
    lg = logging.getLogger("restyle_rt")
    old = lg.level
    lg.setLevel(logging.INFO if old == logging.NOTSET or old > logging.INFO else old)
    try:
        yield
    finally:
        lg.setLevel(old)
