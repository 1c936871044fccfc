"""Typed errors. Library code raises these; the CLI turns them into one line and a non-zero exit."""


class RestyleError(Exception):
    """Base class of every error restyle-rt raises on purpose."""


class CheckpointError(RestyleError):
    """The file is not a usable official ReStyle checkpoint (wrong kind, truncated, keys or shapes off)."""


class ArtifactError(RestyleError):
    """An artifacts directory (manifest, graphs, engines) is missing, corrupt or does not match this runtime."""


class BackendUnavailable(RestyleError):
    """A backend asked for by name cannot run here; the message names what to install."""


class InputError(RestyleError):
    """A user input (image, batch, iteration count) cannot be used; the message names it."""


class ParityError(RestyleError):
    """A graph or engine disagrees with the PyTorch reference beyond its tolerance."""


class BuildError(RestyleError):
    """An engine or kernel build failed."""


class OutputError(RestyleError):
    """An output location cannot be used: unwritable, full, locked by another run, or it would overwrite an input."""


class ClosedError(RestyleError):
    """An object was used after ``close()`` (e.g. an Inverter whose backend was released)."""


# Exit codes of the `restyle-rt` command (documented in `restyle-rt --help` and the README).
EXIT_OK = 0           # everything asked for was done
EXIT_SKIPPED = 1      # done, but some inputs were skipped (each named on stderr)
EXIT_USAGE = 2        # bad arguments or unusable inputs/models (argparse errors, RestyleError)
EXIT_OS = 3           # the operating system refused: unwritable / full / locked output, missing permission
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2); SIGTERM gives 143 (128 + 15). Finished outputs are complete on disk.


def exit_code(e: BaseException) -> int:
    """The exit code for an error that ended a command (see the EXIT_* constants)."""
    if isinstance(e, (OutputError, OSError)):
        return EXIT_OS
    return EXIT_USAGE


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C (KeyboardInterrupt) so the same cleanup runs; ``signum`` says which signal."""

    def __init__(self, signum: int = 15):
        super().__init__(f"signal {signum}")
        self.signum = signum
