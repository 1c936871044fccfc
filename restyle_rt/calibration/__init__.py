"""Loop-aware INT8 calibration: explicit Q/DQ graphs for ONNX Runtime CPU and TensorRT (build time).

Entry point: :func:`calibrate` (CLI: ``restyle-rt calibrate``). The runtime never imports this package; what it
needs (the Q/DQ graph files, their accuracy, the ship bar) is in ``manifest["int8"]``. Attributes are imported
lazily so that registering the CLI command imports nothing heavy.
"""

_PUBLIC = ("CalibrationConfig", "calibrate", "meets_bar", "SHIP_BAR")
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
