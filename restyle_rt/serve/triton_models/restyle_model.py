"""Triton Python-backend BLS model ``restyle``: the ReStyle loop over the ``encoder`` and ``synthesis`` models.

Same tensors and semantics as ``restyle-rt serve`` (:mod:`restyle_rt.serve.protocol`): the runtime's own loop
(:class:`restyle_rt.Inverter`, host loop) runs with a backend whose ``encode``/``synthesize`` are BLS requests to the
two graph models, so early exit, per-step outputs and per-request errors behave exactly as in ``serve``. Needs
``restyle_rt`` importable in the stub's Python environment.

Tensors between steps go through host memory: each BLS call asks for CPU outputs (``preferred_memory``), so on a
GPU the latents make a device round trip every step (not measured: no GPU here). On Jetson the Python backend has no
GPU tensors at all; serve there with ``restyle-rt serve`` (the runtime keeps the loop on the device).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import triton_python_backend_utils as pb_utils

from restyle_rt.artifacts import AVG_FEEDBACK, LATENT_AVG, read_manifest
from restyle_rt.runtime.api import Inverter
from restyle_rt.runtime.backend import Backend
from restyle_rt.serve import protocol


def _call(model, inputs, outputs):
    kw = {}
    if hasattr(pb_utils, "PreferredMemory"):  # ask for host outputs, whatever device the graph model runs on
        kw["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
    req = pb_utils.InferenceRequest(
        model_name=model,
        requested_output_names=outputs,
        inputs=[pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in inputs.items()],
        **kw,
    )
    resp = req.exec()
    if resp.has_error():
        raise pb_utils.TritonModelException(f"BLS call to {model} failed: {resp.error().message()}")
    return [pb_utils.get_output_tensor_by_name(resp, n).as_numpy() for n in outputs]


class BLSBackend(Backend):
    """A runtime backend whose graphs are the repository's ``encoder`` and ``synthesis`` models."""

    name = "triton-bls"

    @classmethod
    def available(cls):
        return True, ""

    def encode(self, image, feedback, latent):
        return _call("encoder", {"image": image, "feedback": feedback, "latent": latent}, ["latent_next"])[0]

    def synthesize(self, latent):
        image, feedback = _call("synthesis", {"latent": latent}, ["image", "feedback"])
        return image, feedback


class TritonPythonModel:
    """The ``restyle`` model: parse requests, run the loop per group of loop arguments, answer each request."""

    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        root = Path(__file__).resolve().parent / "artifacts"
        manifest = read_manifest(root)  # the graphs are the repository's models: only the manifest and seeds here
        art = SimpleNamespace(
            root=root,
            manifest=manifest,
            spec=manifest.spec,
            profile=manifest.profile,
            latent_avg=np.load(root / LATENT_AVG),
            avg_feedback=np.load(root / AVG_FEEDBACK),
        )
        self.inverter = Inverter(art, BLSBackend(art))
        param = cfg.get("parameters", {}).get("max_iters", {}).get("string_value")
        self.max_iters = int(param) if param else protocol.DEFAULT_MAX_ITERS
        fmt = cfg.get("parameters", {}).get("image_format", {}).get("string_value")
        self.image_format = protocol.parse_image_format(fmt) if fmt else "raw"
        self.input_names = [t["name"] for t in cfg["input"]]

    def _invert(self, x, n_iters, return_steps, early_exit):
        return self.inverter.invert(x, n_iters=n_iters, return_steps=return_steps, early_exit=early_exit)

    def execute(self, requests):
        reqs = []
        for r in requests:
            tensors = {n: pb_utils.get_input_tensor_by_name(r, n) for n in self.input_names}
            reqs.append({n: t.as_numpy() for n, t in tensors.items() if t is not None})
        results = protocol.run_requests(
            self._invert, reqs, self.inverter.spec.input_hw, self.max_iters, self.image_format
        )
        responses = []
        for r, res in zip(requests, results):
            if isinstance(res, protocol.RequestError):
                err = pb_utils.TritonError(str(res), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=err))
                continue
            wanted = set(r.requested_output_names() or res)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(k, v) for k, v in res.items() if k in wanted]
                )
            )
        return responses
