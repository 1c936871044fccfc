"""Argument groups shared by the ``restyle-rt`` commands, each declared and validated in one place.

In the spirit of Polygraphy's ``BaseArgs`` groups, but as plain functions (``add_<group>(parser)``, plus the
function that turns the parsed group into library arguments where there is one), since no group here carries state:

* the common options of every command (``-v``, ``-q``, ``--log-level``, ``--no-progress``): :func:`add_common_options`;
* the artifacts directory positional (:func:`add_artifacts`) and an output directory (:func:`add_out_dir`);
* the backend and its precision (:func:`add_backend`, :func:`add_precision`, :func:`add_no_verify`), with the help
  formatters that list the registered backends and their precisions (:class:`BackendHelpFormatter`,
  :class:`RawBackendHelpFormatter`);
* how the loop runs (:func:`add_iters`, :func:`add_batch`, :func:`add_loop_options` = all of the above, checked by
  :func:`check_loop_options` and turned into ``Inverter.load`` arguments by :func:`load_options`), and
  :func:`add_early_exit`;
* ``type=`` validators: a bad value is refused at parse time (exit 2, one line naming the option), before any model
  is loaded or exported (:func:`positive_int`, :func:`nonneg_int`, :func:`threshold`, :func:`writable_file`).

``--iters`` and ``--batch`` of the loop group are checked after parsing (:func:`check_loop_options`: an
``InputError``, exit 2, ``--iters must be >= 1, got 0``), not by a ``type=``: that is the message and the path
(``main`` returns 2) ``invert``, ``eval``, ``edit`` and ``animate`` have always had.

Imports nothing heavy: the backend registry is read only when help is printed or a ``--precision`` is checked.
"""

from __future__ import annotations

import argparse
import math
import re

from ..errors import InputError, OutputError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# --- validators (argparse ``type=``) -----------------------------------------------------------------------------


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
    from ..fsio import check_writable_file

    try:
        check_writable_file(text, "")
    except OutputError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None
    return text


# --- common options (every command) ------------------------------------------------------------------------------


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

    add(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const="DEBUG",
        default="INFO",
        help="debug logging (--log-level DEBUG)",
    )
    add(
        "-q",
        "--quiet",
        dest="log_level",
        action=_Quiet,
        nargs=0,
        default="INFO",
        help="warnings and errors only, no progress bars",
    )
    add(
        "--log-level",
        dest="log_level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        default="INFO",
        help=f"log level: {', '.join(LOG_LEVELS)} (default INFO; the last of -v, -q, --log-level wins)",
    )
    add(
        "--no-progress",
        dest="progress_off",
        action="store_true",
        default=False,
        help="no progress bars (they are drawn only when stderr is a terminal)",
    )


# --- help: the registered backends and their precisions ----------------------------------------------------------


class PrecisionChoices:
    """``--precision``'s choices: every precision a registered backend declares (``Backend.precisions``), read
    when an argument is checked or help is printed, not at registration (importing the backends loads numpy)."""

    def _all(self) -> tuple:
        from ..runtime.backends import precisions

        return tuple(dict.fromkeys(p for ps in precisions().values() for p in ps))

    def __contains__(self, value) -> bool:
        return value in self._all()

    def __iter__(self):
        return iter(self._all())


class BackendNames:
    """Help-formatter mixin: ``BACKENDS`` in an option's help becomes the registered backend names, and
    ``PRECISIONS`` each backend's declared precisions, when help is printed (importing the registry loads numpy,
    which registration must not). Used by every parser with :func:`add_backend` or :func:`add_precision`."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        if "BACKENDS" in text:
            from ..runtime.backends import names

            text = text.replace("BACKENDS", " | ".join(names()))
        if "PRECISIONS" in text:
            from ..runtime.backends import precisions

            text = text.replace("PRECISIONS", "; ".join(f"{n} {' | '.join(ps)}" for n, ps in precisions().items()))
        return text


class BackendHelpFormatter(BackendNames, argparse.HelpFormatter):
    """argparse's default formatter, with :class:`BackendNames`."""


class RawBackendHelpFormatter(BackendNames, argparse.RawDescriptionHelpFormatter):
    """argparse's raw-description formatter (the epilog printed as written), with :class:`BackendNames`."""


# --- artifacts and outputs ----------------------------------------------------------------------------------------


def add_artifacts(p, optional: bool = False) -> None:
    """The ``ARTIFACTS`` positional (``optional``: ``nargs="?"``, for a mutually exclusive group)."""
    p.add_argument(
        "artifacts",
        metavar="ARTIFACTS",
        **({"nargs": "?"} if optional else {}),
        help="artifacts directory (from `restyle-rt export`)",
    )


def add_out_dir(p, help: str = "output directory", required: bool = True) -> None:
    """``--out DIR``: the directory a command writes."""
    p.add_argument("--out", required=required, metavar="DIR", help=help)


# --- backend and precision ----------------------------------------------------------------------------------------


def add_backend(p) -> None:
    """``--backend NAME`` (default auto; help lists the registered backends: use a :class:`BackendNames`
    formatter)."""
    p.add_argument("--backend", default="auto", metavar="NAME", help="runtime backend: BACKENDS (default auto)")


def add_precision(p) -> None:
    """``--precision``: one of the precisions the registered backends declare."""
    p.add_argument(
        "--precision",
        default=None,
        choices=PrecisionChoices(),
        metavar="PRECISION",
        help="graphs/engines to run, per backend: PRECISIONS (default: the backend's own, listed first; auto runs "
        "a lower precision only where its measured accuracy met its bar)",
    )


def add_no_verify(p) -> None:
    """``--no-verify``: skip the sha256 check of the artifacts' files."""
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the artifacts' files against the sha256 recorded in their manifest",
    )


# --- the loop -----------------------------------------------------------------------------------------------------


def add_iters(p) -> None:
    """``--iters N`` (default 5), checked by :func:`check_loop_options`."""
    p.add_argument("--iters", type=int, default=5, metavar="N", help="ReStyle steps per image (default 5)")


def add_batch(p) -> None:
    """``--batch N`` (default: the profile max), checked by :func:`check_loop_options`."""
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="images per backend call (default: the artifacts' profile max)",
    )


def add_loop_options(p) -> None:
    """``--iters``, ``--batch``, ``--backend``, ``--precision``, ``--no-verify``: how the loop runs, for ``invert``
    and ``eval`` alike (checked by :func:`check_loop_options`, turned into ``Inverter.load`` arguments by
    :func:`load_options`)."""
    add_iters(p)
    add_batch(p)
    add_backend(p)
    add_precision(p)
    add_no_verify(p)


def check_loop_options(args) -> None:
    """Refuse ``--iters`` or ``--batch`` below 1 (before anything is read or loaded); a parser without ``--batch``
    is checked for ``--iters`` only.

    Raises:
        InputError: naming the option.
    """
    if args.iters < 1:
        raise InputError(f"--iters must be >= 1, got {args.iters}")
    batch = getattr(args, "batch", None)
    if batch is not None and batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")


def load_options(args) -> dict:
    """``Inverter.load`` keyword arguments (all but the directory) from the backend and loop options the parser
    has: ``--backend``, and ``--no-verify``, ``--batch``, ``--precision`` where it declares them."""
    opts = {"backend": args.backend}
    if hasattr(args, "no_verify"):
        opts["verify"] = not args.no_verify
    if hasattr(args, "batch"):
        opts["probe_batch"] = args.batch
    if getattr(args, "precision", None) is not None:
        opts["precision"] = args.precision
    return opts


def batch_size(asked, profile) -> int:
    """``--batch``, capped at the artifacts' profile max (Inverter.invert runs at most that many at once)."""
    import logging

    if asked is None:
        return profile.max
    if asked > profile.max:
        logging.getLogger("restyle_rt").warning(
            "--batch %d is above the artifacts' batch profile max %d; using %d", asked, profile.max, profile.max
        )
        return profile.max
    return asked


def add_early_exit(p, help: str) -> None:
    """``--early-exit THRESH``: a finite number >= 0 (default: off)."""
    p.add_argument("--early-exit", type=threshold, default=None, metavar="THRESH", help=help)


# --- argparse quirks ----------------------------------------------------------------------------------------------


def accept_negative_lists(parser: argparse.ArgumentParser) -> None:
    """Let a value such as ``-5,5`` (``edit --factors -5,5``) parse as a value: by itself argparse takes only plain
    negative numbers for values. argparse has no public switch for this: its private ``_negative_number_matcher`` is
    the pattern it consults, set here on this one parser (tests/unit/test_workflows.py runs ``edit --factors -2,2``)."""
    parser._negative_number_matcher = re.compile(r"^-\d*\.?\d+(,-?\d*\.?\d+)*$")
