"""onnxruntime-gpu's provider rules, played on the CPU build of onnxruntime.

What it enforces, each as onnxruntime-gpu does (sources: ``onnxruntime/capi/onnxruntime_inference_collection.py``
of the installed onnxruntime, and ORT's TensorRT EP constructor in ``tensorrt_execution_provider.cc``):

* ``get_available_providers()`` lists ``TensorrtExecutionProvider`` and ``CUDAExecutionProvider`` whether or not
  their libraries load (the wheel always registers them).
* A provider whose libraries are missing is dropped when the session is created: ORT logs "Failed to create
  TensorrtExecutionProvider" and the session's ``get_providers()`` no longer lists it (``trt_libs=False``;
  ``cuda_libs=False`` likewise for CUDA).
* The TensorRT EP creates its engine cache directory with ``fs::create_directory``: one level only, so a missing
  parent throws. ``InferenceSession.__init__`` then retries once with its fallback list, ``[CUDA, CPU]`` when CUDA
  was asked beside TensorRT (``[CPU]`` otherwise), *without* the caller's provider options.
* A provider option the EP does not know is an error (the session is not created).

The sessions run on the CPU execution provider; OrtValues asked for ``"cuda"`` are served in host memory and
recorded, so the device loop's code runs unchanged.
"""

from __future__ import annotations

import os

import onnxruntime as ort

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
# the option keys the backend may pass, per EP (a subset of each EP's documented options)
KNOWN_OPTIONS = {
    CUDA: {
        "device_id",
        "cudnn_conv_algo_search",
        "do_copy_in_default_stream",
        "enable_cuda_graph",
        "arena_extend_strategy",
        "gpu_mem_limit",
        "cudnn_conv_use_max_workspace",
        "use_tf32",
    },
    TRT: {
        "device_id",
        "trt_profile_min_shapes",
        "trt_profile_opt_shapes",
        "trt_profile_max_shapes",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_fp16_enable",
        "trt_int8_enable",
        "trt_cuda_graph_enable",
        "trt_max_workspace_size",
    },
    CPU: set(),
}


class GpuOrt:
    """Install with :meth:`install`; ``created`` lists each session's final providers, ``log`` ORT's messages."""

    def __init__(self, trt_libs: bool = False, cuda_libs: bool = True):
        self.trt_libs, self.cuda_libs = trt_libs, cuda_libs
        self.created: list[list[str]] = []
        self.log: list[str] = []
        self.devices: list[tuple] = []
        self.real_session = ort.InferenceSession

    def install(self, monkeypatch) -> GpuOrt:
        fake = self
        monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])

        class InferenceSession:  # the subset of the real class the runtime uses
            def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kw):
                names = [p[0] if isinstance(p, tuple) else p for p in providers or []]
                fallback = [CUDA, CPU] if CUDA in names and TRT in names else [CPU]
                try:
                    self._providers = fake._create(names, provider_options)
                except (ValueError, RuntimeError) as e:  # InferenceSession.__init__'s one retry
                    fake.log.append(f"EP Error {e} when using {names}; falling back to {fallback}")
                    self._providers = fake._create(fallback, None)
                fake.created.append(list(self._providers))
                self._sess = fake.real_session(path_or_bytes, sess_options=sess_options, providers=[CPU])

            def get_providers(self):
                return list(self._providers)

            def __getattr__(self, name):
                return getattr(self._sess, name)

        monkeypatch.setattr(ort, "InferenceSession", InferenceSession)
        OV = ort.OrtValue
        from_numpy, from_shape = OV.ortvalue_from_numpy, OV.ortvalue_from_shape_and_type

        def fake_from_numpy(arr, device_type="cpu", device_id=0, *a, **kw):
            fake.devices.append((device_type, device_id))
            return from_numpy(arr, "cpu", 0)

        def fake_from_shape(shape, element_type, device_type="cpu", device_id=0, *a, **kw):
            fake.devices.append((device_type, device_id))
            return from_shape(shape, element_type, "cpu", 0)

        monkeypatch.setattr(OV, "ortvalue_from_numpy", staticmethod(fake_from_numpy))
        monkeypatch.setattr(OV, "ortvalue_from_shape_and_type", staticmethod(fake_from_shape))
        return self

    def _create(self, names: list[str], options: list | None) -> list[str]:
        """The providers a session ends with, or ValueError/RuntimeError as ORT raises them."""
        options = list(options) if options else [{} for _ in names]
        if len(options) != len(names):
            raise ValueError("'providers' and 'provider_options' should be the same length if both are given.")
        kept = []
        for name, opts in zip(names, options):
            unknown = set(opts) - KNOWN_OPTIONS.get(name, set())
            if unknown:
                raise RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : {name}: unknown option(s) {sorted(unknown)}")
            if name == TRT and not self.trt_libs:
                self.log.append(
                    "Failed to create TensorrtExecutionProvider. Please reference "
                    "https://onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html"
                    "#requirements to ensure all dependencies are met."
                )
                continue
            if name == CUDA and not self.cuda_libs:
                self.log.append("Failed to create CUDAExecutionProvider.")
                continue
            if name == TRT and opts.get("trt_engine_cache_enable") in (True, "True", "1", 1):
                path = str(opts.get("trt_engine_cache_path", ""))
                if path and not os.path.isdir(path):
                    try:
                        os.mkdir(path)  # fs::create_directory: one level
                    except OSError as e:
                        raise RuntimeError(f"TensorRT EP failed to create directory {path}: {e}") from None
            kept.append(name)
        return kept
