"""restyle-rt: ReStyle inversion as two ONNX / TensorRT graphs and a lean, torch-free residual loop.

``import restyle_rt`` stays light: :class:`Inverter` and :func:`load_artifacts` are imported on first use.
"""

__version__ = "0.1.0"
__all__ = ["Inverter", "load_artifacts", "__version__"]


def __getattr__(name):
    if name == "Inverter":
        from .runtime.api import Inverter

        return Inverter
    if name == "load_artifacts":
        from .artifacts import load

        return load
    raise AttributeError(f"module 'restyle_rt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + ["Inverter", "load_artifacts"])
