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
