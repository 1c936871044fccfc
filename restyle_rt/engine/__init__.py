"""TensorRT / TensorRT-RTX engines: build them for an artifacts directory, record them, check them at load.

``build_engines`` (``restyle-rt build``, :mod:`restyle_rt.cli.build`) writes
``ARTIFACTS/engines/<graph>.<precision>.engine`` and one record per engine in ``manifest["engines"]``, with the build
settings read back from TensorRT (:mod:`.settings`); ``check_record`` refuses an engine built for another TensorRT
or GPU. Names are imported lazily so that registering the ``build`` command imports nothing heavy.
"""

import importlib

_LAZY = {
    "BuildOptions": ".builder",
    "EngineBuilder": ".builder",
    "build_engines": ".builder",
    "default_compute_capabilities": ".builder",
    "supported_compute_capabilities": ".builder",
    "PRECISIONS": ".records",
    "check_record": ".records",
    "engine_file": ".records",
    "fp16_onnx_file": ".records",
    "incompatibility": ".records",
    "summarize": ".records",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
