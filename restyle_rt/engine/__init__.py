"""TensorRT / TensorRT-RTX engines: build them for an artifacts directory, record them, check them at load.

``build_engines`` (``restyle-rt build``) writes ``ARTIFACTS/engines/<graph>.<precision>.engine`` and one record per
engine in ``manifest["engines"]``; ``check_record`` refuses an engine built for another TensorRT or GPU.
"""
from .builder import BuildOptions, EngineBuilder, build_engines, default_compute_capabilities
from .records import PRECISIONS, check_record, engine_file, fp16_onnx_file, incompatibility, summarize

__all__ = ["BuildOptions", "EngineBuilder", "PRECISIONS", "build_engines", "check_record",
           "default_compute_capabilities", "engine_file", "fp16_onnx_file", "incompatibility", "summarize"]
