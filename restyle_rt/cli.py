"""`restyle-rt` command line: thin. Parse -> library call; typed errors become one line and an exit code.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser whose
``func(args) -> int`` default does the work. Registration must import nothing heavy (no torch, no TensorRT):
the runtime commands have to work on a torch-free box.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import List, Optional

from . import __version__
from .errors import EXIT_INTERRUPTED, RestyleError, Terminated, exit_code

EXIT_CODES = """exit codes:
  0    everything asked for was done
  1    done, but some inputs were skipped (each one named on stderr)
  2    bad arguments, or an unusable input, checkpoint or artifacts directory (one line on stderr)
  3    the operating system refused: output unwritable, disk full, locked by another run, permission
  130  interrupted by SIGINT (143: SIGTERM); finished outputs are complete on disk, none is partial"""

# subcommand modules, in --help order
COMMANDS = (
    "restyle_rt.export.cli",      # export
    "restyle_rt.runtime.cli",     # invert
    "restyle_rt.engine.cli",      # build
    "restyle_rt.calibration.cli",  # calibrate
    "restyle_rt.bench.cli",       # bench
    "restyle_rt.demo",            # demo
    "restyle_rt.serve.cli",       # serve, triton-repo
    "restyle_rt.workflows.cli",   # edit, animate
    "restyle_rt.align.cli",       # align
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restyle-rt", description="ReStyle inversion as ONNX / TensorRT graphs: export an "
                                "official checkpoint, build engines, invert images, benchmark.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    previous = _on_sigterm()
    try:
        return int(args.func(args) or 0)
    except (RestyleError, OSError) as e:  # foreseeable failures: one line, no traceback
        print(f"restyle-rt {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return exit_code(e)
    except Terminated as e:
        print(f"restyle-rt {args.command}: terminated (signal {e.signum})", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"restyle-rt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm():
    """Make SIGTERM raise :class:`Terminated` (cleanup as for Ctrl-C); returns the old handler (None: not set)."""
    def handler(signum, frame):
        raise Terminated(signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a library thread): leave signals alone
        return None


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, RestyleError):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return str(e)


if __name__ == "__main__":
    sys.exit(main())
