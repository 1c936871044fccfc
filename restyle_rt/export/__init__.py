"""Export: official checkpoint -> validated ONNX graphs. Needs torch (the runtime does not), imported lazily so
that ``restyle-rt`` subcommand registration works on a torch-free machine."""

_LAZY = {"Checkpoint": ".checkpoint", "load_checkpoint": ".checkpoint", "export_artifacts": ".onnx"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
