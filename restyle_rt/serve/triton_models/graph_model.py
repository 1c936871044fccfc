"""Triton Python-backend model serving one ONNX graph (encoder or synthesis) with ONNX Runtime on CPU.

For Triton builds without the onnxruntime backend (e.g. the tritonserver inside the PyTriton wheel); in NVIDIA's
Triton container prefer ``onnxruntime_onnx`` or ``tensorrt_plan`` (``restyle-rt triton-repo --graphs``). Requests of
one execution (Triton's dynamic batcher) run as one batch. Needs numpy and onnxruntime in the stub's environment.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """ONNX Runtime session over ``model.onnx`` next to this file; I/O names from the model config."""

    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in cfg["input"]]
        self.outputs = [t["name"] for t in cfg["output"]]
        so = ort.SessionOptions()
        threads = int(cfg.get("parameters", {}).get("threads", {}).get("string_value", "0") or 0)
        if threads:
            so.intra_op_num_threads = threads
        path = Path(__file__).resolve().parent / "model.onnx"
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs] for r in requests]
        sizes = [a[0].shape[0] for a in arrays]
        feeds = {n: np.concatenate([a[i] for a in arrays]) for i, n in enumerate(self.inputs)}  # [sum B, ...]
        results = self.session.run(self.outputs, feeds)
        responses, lo = [], 0
        for b in sizes:
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(r[lo : lo + b])) for n, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            lo += b
        return responses
