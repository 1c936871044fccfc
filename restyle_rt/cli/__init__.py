"""`restyle-rt` command line: thin. Parse -> library call; typed errors become one line and an exit code.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser whose
``func(args) -> int`` default does the work. Registration must import nothing heavy (no torch, no TensorRT):
the runtime commands have to work on a torch-free box. The common options (``-v``, ``-q``, ``--log-level``,
``--no-progress``) are added to every subcommand's parser too, so they work before and after the subcommand.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import List, Optional

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_MEANINGS, EXIT_OK, EXIT_USAGE, RestyleError, Terminated, exit_code


def exit_code_table() -> str:
    """The exit-code table of ``restyle-rt --help``, made from :data:`restyle_rt.errors.EXIT_MEANINGS`."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_MEANINGS.items())


EXIT_CODES = exit_code_table()
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

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
    "restyle_rt.workflows.video_cli",  # video
    "restyle_rt.workflows.eval_cli",  # eval
    "restyle_rt.align.cli",       # align
    "restyle_rt.info",            # info
    "restyle_rt.doctor",          # doctor
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restyle-rt", description="ReStyle inversion as ONNX / TensorRT graphs: export an "
                                "official checkpoint, build engines, invert images, benchmark.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"restyle-rt {__version__}")
    add_common_options(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):  # subcommand not part of this build
                continue
            raise
        module.register(sub)
    for parser in {id(q): q for q in sub.choices.values()}.values():  # aliases share a parser: once each
        add_common_options(parser, top=False)
    return p


class _Quiet(argparse.Action):
    """``-q``: warnings and errors only, and no progress bars."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.log_level, namespace.progress_off = "WARNING", True


def add_common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """``-v``, ``-q``, ``--log-level``, ``--no-progress`` on ``parser``.

    On a subcommand's parser (``top=False``) their defaults are SUPPRESS, so that an option given before the
    subcommand is not reset by the subcommand's defaults; an option string the subcommand defines itself is left
    to it.
    """
    group = parser if top else parser.add_argument_group("common options")
    d = {} if top else {"default": argparse.SUPPRESS}
    taken = set(parser._option_string_actions)

    def add(*flags, **kw):
        flags = [f for f in flags if f not in taken]
        if flags:
            group.add_argument(*flags, **{**kw, **d})

    add("-v", "--verbose", dest="log_level", action="store_const", const="DEBUG", default="INFO",
        help="debug logging (--log-level DEBUG)")
    add("-q", "--quiet", dest="log_level", action=_Quiet, nargs=0, default="INFO",
        help="warnings and errors only, no progress bars")
    add("--log-level", dest="log_level", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL", default="INFO",
        help=f"log level: {', '.join(LOG_LEVELS)} (default INFO; the last of -v, -q, --log-level wins)")
    add("--no-progress", dest="progress_off", action="store_true", default=False,
        help="no progress bars (they are drawn only when stderr is a terminal)")


def main(argv: Optional[List[str]] = None) -> int:
    from . import progress

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname).1s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    off = bool(getattr(args, "progress_off", False) or getattr(args, "no_progress", False))
    args.no_progress = off  # for commands that read their own --no-progress (export, bench)
    logger = logging.getLogger("restyle_rt")
    level, was_enabled = logger.level, progress.set_enabled(not off)
    logger.setLevel(args.log_level)
    previous = _on_sigterm()
    try:
        with progress.logging_redirected():
            return int(args.func(args) or EXIT_OK)
    except (RestyleError, OSError) as e:  # foreseeable failures: one line, no traceback
        print(f"restyle-rt {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return exit_code(e)
    except Terminated as e:
        print(f"restyle-rt {args.command}: terminated (signal {e.signum})", file=sys.stderr)
        return EXIT_INTERRUPTED - signal.SIGINT + e.signum  # 128 + signum: 143 for SIGTERM
    except KeyboardInterrupt:
        print(f"restyle-rt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logger.setLevel(level)
        progress.set_enabled(was_enabled)


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
