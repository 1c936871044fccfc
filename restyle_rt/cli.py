"""`restyle-rt` command line: thin. Parse -> library call; typed errors become one line and exit code 2.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser whose
``func(args) -> int`` default does the work. Registration must import nothing heavy (no torch, no TensorRT):
the runtime commands have to work on a torch-free box.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from . import __version__
from .errors import RestyleError

# subcommand modules, in --help order
COMMANDS = (
    "restyle_rt.export.cli",      # export
    "restyle_rt.runtime.cli",     # invert
    "restyle_rt.engine_cli",      # build
    "restyle_rt.calibration.cli",  # calibrate
    "restyle_rt.bench.cli",       # bench
    "restyle_rt.demo",            # demo
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restyle-rt", description="ReStyle inversion as ONNX / TensorRT graphs: export an "
                                "official checkpoint, build engines, invert images, benchmark.")
    p.add_argument("--version", action="version", version=f"restyle-rt {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):  # subcommand not part of this build
                continue
            raise
        module.register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname).1s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except RestyleError as e:
        print(f"restyle-rt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
