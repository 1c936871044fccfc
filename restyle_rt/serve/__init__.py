"""Serving: ``restyle-rt serve`` (Triton through PyTriton) and the Triton model repository generator.

Imports the runtime, never the exporter; PyTriton is imported only when a server starts (``[serve]`` extra).
"""
from .protocol import MODEL_NAME, RequestError, run_requests

__all__ = ["MODEL_NAME", "RequestError", "run_requests"]
