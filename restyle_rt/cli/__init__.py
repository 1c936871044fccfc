"""`restyle-rt` command line: thin. Parse -> library call; typed errors become one line and an exit code.

Every command lives in this package, one module per command (or per small family), each exposing
``register(subparsers)``, which adds a parser whose ``func(args) -> int`` default (``run``, or ``run_<command>`` in a
family) does the work: build a config from the arguments, call the library, return a named exit code. Options
several commands share are declared and validated once, in :mod:`restyle_rt.cli.args`; the ``--out`` manager of
``invert``, ``edit``, ``animate``, ``eval`` and ``video`` is :mod:`restyle_rt.cli.outputs`. Registration must
import nothing heavy (no torch, no TensorRT, no numpy): the runtime commands have to work on a torch-free box. The
common options (``-v``, ``-q``, ``--log-level``, ``--no-progress``) are added to every subcommand's parser too, so
they work before and after the subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_MEANINGS, EXIT_OK, EXIT_USAGE, RestyleError, Terminated, exit_code
from .args import add_common_options


def exit_code_table() -> str:
    """The exit-code table of ``restyle-rt --help``, made from :data:`restyle_rt.errors.EXIT_MEANINGS`."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_MEANINGS.items())


EXIT_CODES = exit_code_table()
# command modules, in --help order
COMMANDS = (
    "restyle_rt.cli.export",  # export, make-checkpoint
    "restyle_rt.cli.invert",  # invert
    "restyle_rt.cli.build",  # build
    "restyle_rt.cli.calibrate",  # calibrate
    "restyle_rt.cli.bench",  # bench
    "restyle_rt.cli.demo",  # demo
    "restyle_rt.cli.serve",  # serve, triton-repo
    "restyle_rt.cli.edit",  # edit, animate
    "restyle_rt.cli.video",  # video
    "restyle_rt.cli.eval",  # eval
    "restyle_rt.cli.align",  # align
    "restyle_rt.cli.info",  # info
    "restyle_rt.cli.doctor",  # doctor
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restyle-rt",
        description="ReStyle inversion as ONNX / TensorRT graphs: export an "
        "official checkpoint, build engines, invert images, benchmark.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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


def main(argv: list[str] | None = None) -> int:
    from .. import progress

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
