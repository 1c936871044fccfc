"""Typed errors. Library code raises these; the CLI turns them into one line and a non-zero exit.

Each class carries its exit code (``exit_status``); :func:`exit_code` maps an error to it, and ``restyle-rt --help``
prints :data:`EXIT_MEANINGS`, so the table and the codes cannot drift apart.
"""

from typing import ClassVar

# Exit codes of the `restyle-rt` command (`restyle-rt --help`, README "Files, failures and exit codes").
EXIT_OK = 0  # everything asked for was done
EXIT_SKIPPED = 1  # done, but some inputs were skipped (each named on stderr)
EXIT_USAGE = 2  # bad arguments or unusable inputs/models (argparse errors, most RestyleErrors)
EXIT_OS = 3  # the operating system refused: unwritable / full / locked output, missing permission
EXIT_CHECK = 4  # a check failed: a graph or engine disagrees with its reference beyond tolerance
EXIT_BUILD = 5  # a build failed: TensorRT engine, plugin or kernel
EXIT_BACKEND = 6  # the backend cannot run here: missing library, no GPU, unusable driver, a failing CUDA call
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2). Finished outputs are complete on disk.
EXIT_TERMINATED = 143  # SIGTERM (128 + 15), handled as SIGINT.

EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "everything asked for was done",
    EXIT_SKIPPED: "done, but some inputs were skipped (each one named on stderr)",
    EXIT_USAGE: "bad arguments, or an unusable input, checkpoint or artifacts directory (one line on stderr)",
    EXIT_OS: "the operating system refused: output unwritable, disk full, locked by another run, permission",
    EXIT_CHECK: "a check failed: a graph or engine disagrees with its PyTorch reference beyond tolerance",
    EXIT_BUILD: "a build failed (TensorRT engine, plugin or kernel); the builder's errors on stderr",
    EXIT_BACKEND: "the backend cannot run here: library missing, no GPU, unusable driver, a CUDA call failed",
    EXIT_INTERRUPTED: "interrupted by SIGINT; finished outputs are complete on disk, none is partial",
    EXIT_TERMINATED: "terminated by SIGTERM; as for SIGINT",
}


class RestyleError(Exception):
    """Base class of every error restyle-rt raises on purpose; ``exit_status`` is the CLI's exit code for it."""

    exit_status: ClassVar[int] = EXIT_USAGE


class CheckpointError(RestyleError):
    """The file is not a usable official ReStyle checkpoint (wrong kind, truncated, keys or shapes off)."""


class ArtifactError(RestyleError):
    """An artifacts directory (manifest, graphs, engines) is missing, corrupt or does not match this runtime."""


class BackendUnavailable(RestyleError):
    """A backend asked for by name cannot run here; the message names what to install."""

    exit_status = EXIT_BACKEND


class InputError(RestyleError):
    """A user input (image, batch, iteration count) cannot be used; the message names it."""


class ParityError(RestyleError):
    """A graph or engine disagrees with the PyTorch reference beyond its tolerance."""

    exit_status = EXIT_CHECK


class BuildError(RestyleError):
    """An engine or kernel build failed."""

    exit_status = EXIT_BUILD


class OutputError(RestyleError):
    """An output location cannot be used: unwritable, full, locked by another run, or it would overwrite an input."""

    exit_status = EXIT_OS


class ClosedError(RestyleError):
    """An object was used after ``close()`` (e.g. an Inverter whose backend was released)."""


def exit_code(e: BaseException) -> int:
    """The exit code for an error that ended a command: the class's ``exit_status``; OSError: :data:`EXIT_OS`."""
    if isinstance(e, RestyleError):
        return type(e).exit_status
    if isinstance(e, OSError):
        return EXIT_OS
    return EXIT_USAGE


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C (KeyboardInterrupt) so the same cleanup runs; ``signum`` says which signal."""

    def __init__(self, signum: int = 15):
        super().__init__(f"signal {signum}")
        self.signum = signum
