"""OpenVINO backend (CPU; GPU / NPU with ``device=``): the artifacts' ONNX graphs through OpenVINO's own runtime
(not ONNX Runtime's OpenVINO EP: docs/architecture.md), FP32, BF16 or INT8.

Precisions (``precision=``):

* ``fp32``: ``INFERENCE_PRECISION_HINT=f32``, set explicitly (on a CPU with BF16 OpenVINO's default hint is bf16).
* ``bf16``: ``INFERENCE_PRECISION_HINT=bf16``, only on a CPU that has BF16 (``BackendUnavailable`` otherwise). The
  CPU plugin keeps the graph tail, hence the latent accumulation, in FP32; nothing more is pinned.
* ``mixed``: precision per graph (:data:`GRAPH_HINTS`): the encoder in BF16, the synthesis in FP32. The encoder's
  BF16 error is a residual the next step corrects; the synthesis's reaches the image the user gets, and is spread
  evenly over its layers, so no per-layer FP32 set recovers it cheaply (``benchmarks/fitted-church-256.md``).
* ``int8``: the explicit Q/DQ graphs ``restyle-rt calibrate`` recorded (``manifest["int8"]``, the CPU encoding the
  ort backend runs too); a graph it shipped none for stays FP32. ``ArtifactError`` when the artifacts have none.
* ``auto``: the fastest precision that met the ship bar on a fitted model on a CPU with this one's BF16 path
  (``parity.SHIP_VERDICTS``: ``mixed`` on AVX-512 BF16 CPUs today), else ``fp32``; the choice is logged.

Compiled models are cached in ``cache_dir`` (default ``openvino`` under :func:`restyle_rt.fsio.cache_root`; OpenVINO
keys each blob by a hash of the model and the compile options, so one directory serves every artifacts dir). One
infer request per graph is created once and reused; ``encode``/``synthesize`` return views of its output tensors,
which the next call overwrites (the ABC's contract: copy what you keep).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ... import fsio
from ...artifacts import Artifacts, int8_graph_path
from ...errors import ArtifactError, BackendUnavailable, InputError
from ...spec import BATCH
from ..backend import Backend
from ..loop import check_feed

log = logging.getLogger("restyle_rt")

# INFERENCE_PRECISION_HINT per precision and graph (int8 runs the Q/DQ graphs with the f32 hint).
GRAPH_HINTS = {
    "fp32": {"encoder": "f32", "synthesis": "f32"},
    "bf16": {"encoder": "bf16", "synthesis": "bf16"},
    "mixed": {"encoder": "bf16", "synthesis": "f32"},
    "int8": {"encoder": "f32", "synthesis": "f32"},
}
PRECISIONS = tuple(GRAPH_HINTS)  # ("fp32", "bf16", "mixed", "int8")
BF16_PRECISIONS = tuple(p for p, hints in GRAPH_HINTS.items() if "bf16" in hints.values())  # need a BF16 CPU
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
DEVICE_KINDS = ("CPU", "GPU", "NPU")  # OpenVINO's device names (``GPU.1``: the second GPU)


def cpu_has_bf16() -> bool:
    """Whether this CPU executes BF16 natively (OpenVINO's ``OPTIMIZATION_CAPABILITIES`` lists ``BF16``)."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no openvino, or no CPU plugin: no BF16 through this backend
        return False


class OpenVinoBackend(Backend):
    """Runs ``encoder.onnx`` and ``synthesis.onnx`` (or their INT8 Q/DQ versions) with OpenVINO on one device.

    Args:
        artifacts: a verified artifacts directory.
        precision: ``auto`` (default), ``fp32``, ``bf16``, ``mixed`` or ``int8`` (see the module docstring).
        threads: ``INFERENCE_NUM_THREADS`` (default: the CPUs available to this process).
        hint: ``latency`` (default: one stream using every thread; the loop issues one request at a time) or
            ``throughput`` (OpenVINO picks the streams; only worth it when several loops run concurrently).
        cache_dir: compiled-model cache; ``""`` disables caching.
        device: an OpenVINO device name: ``"CPU"`` (default), ``"GPU"``, ``"GPU.1"``, ``"NPU"``, among
            ``ov.Core().available_devices``. ``threads`` and ``bf16`` apply to the CPU only; ``auto`` is ``fp32``
            elsewhere (the measured accuracy bar is the CPU's). Only the CPU has been run here.

    Raises:
        BackendUnavailable: openvino is missing, the device is not available here, or BF16 is asked for on a
            device without it.
        ArtifactError: a graph does not match ``spec.graph_io``, or INT8 graphs are asked for and absent.
        InputError: an unknown precision, hint or device name.
    """

    name = "openvino"
    extra = "openvino"
    library = "openvino"
    precisions = ("auto",) + PRECISIONS
    options = frozenset({"precision", "threads", "hint", "cache_dir", "device"})
    probed_by_auto = True

    def __init__(
        self,
        artifacts: Artifacts,
        precision: str = "auto",
        threads: int | None = None,
        hint: str = "latency",
        cache_dir: os.PathLike | None = None,
        device: str = "CPU",
    ):
        super().__init__(artifacts)
        import openvino as ov

        from .ort import default_threads

        if hint not in HINTS:
            raise InputError(f"openvino backend: hint must be one of {sorted(HINTS)}, got {hint!r}")
        self.core = ov.Core()
        self.device = check_device(list(self.core.available_devices), device)
        self.precision = resolve_precision(precision, self.device)
        if self.precision in BF16_PRECISIONS and self.device != "CPU":
            raise InputError(
                f"openvino backend: precision {self.precision!r} runs on the CPU device only, not {self.device}"
            )
        if self.precision in BF16_PRECISIONS and not cpu_has_bf16():
            raise BackendUnavailable(
                f"openvino backend: precision {self.precision!r} needs a CPU with BF16 (AVX512-BF16 or AMX); "
                "this one has none: use precision='fp32'"
            )
        self.threads, self.hint = int(threads or default_threads()), hint
        self.cache_dir = _cache_dir(cache_dir)
        if self.cache_dir:
            self.core.set_property({"CACHE_DIR": str(self.cache_dir)})
        self.compiled = {g: self._compile(g) for g in ("encoder", "synthesis")}
        self.requests = {g: c.create_infer_request() for g, c in self.compiled.items()}
        self._outputs = {g: {o.get_any_name(): o for o in c.outputs} for g, c in self.compiled.items()}
        log.info(
            "openvino backend: %s on %s, %d threads, %s hint, cache %s",
            self.precision,
            self.device,
            self.threads,
            hint,
            self.cache_dir or "off",
        )

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import openvino as ov
        except ImportError as e:
            return False, f"openvino cannot be imported ({e}); pip install 'restyle-rt[openvino]'"
        if "CPU" not in ov.Core().available_devices:
            return False, "openvino has no CPU device here"
        return True, ""

    def _graph_file(self, graph: str) -> Path:
        if self.precision != "int8":
            return self.artifacts.graph_path(graph)
        path = int8_graph_path(self.artifacts, graph)  # the calibration's CPU encoding, as the ort backend runs
        if path is None:
            log.info("openvino backend: no INT8 %s graph was shipped by the calibration; it runs in FP32", graph)
            return self.artifacts.graph_path(graph)
        return path

    def _compile(self, graph: str):
        path = self._graph_file(graph)
        config = {
            "INFERENCE_PRECISION_HINT": GRAPH_HINTS[self.precision][graph],
            "PERFORMANCE_HINT": HINTS[self.hint],
        }
        if self.device == "CPU":  # a CPU-plugin property; other plugins refuse it
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:  # from the path, so that a cache hit skips reading the ONNX file too
            compiled = self.core.compile_model(str(path), self.device, config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            raise ArtifactError(f"{path}: OpenVINO cannot load or compile it for {self.device}: {e}") from None
        verify_io(compiled, self.spec.graph_io(graph), path.name)
        return compiled

    # --- host API -------------------------------------------------------------------------------------------

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feed(self.artifacts, graph, feed, "openvino backend")
        feed = {k: np.ascontiguousarray(v) for k, v in feed.items()}
        res = self.requests[graph].infer(feed, share_inputs=True, share_outputs=True)
        return {name: res[port] for name, port in self._outputs[graph].items()}

    def encode(self, image: np.ndarray, feedback: np.ndarray, latent: np.ndarray) -> np.ndarray:
        out = self._run("encoder", {"image": image, "feedback": feedback, "latent": latent})
        return out["latent_next"]  # [B, S, 512], a view of the request's output tensor

    def synthesize(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._run("synthesis", {"latent": latent})
        return out["image"], out["feedback"]  # [B, 3, h, w], [B, 3, H, W], views

    def close(self) -> None:
        self.requests, self.compiled = {}, {}


def check_device(available: list[str], device: str) -> str:
    """``device`` when OpenVINO can run on it here (``available``: ``ov.Core().available_devices``).

    ``"GPU"`` names the first GPU when OpenVINO lists ``GPU.0``, ``GPU.1``; ``"GPU.0"`` the only one when it lists
    ``GPU``.

    Raises:
        BackendUnavailable: a CPU/GPU/NPU device this machine does not have (the available ones named).
        InputError: not an OpenVINO device name.
    """
    if not isinstance(device, str) or not device:
        raise InputError(f"openvino backend: device must be a device name such as 'CPU' or 'GPU', got {device!r}")
    kind, _, index = device.partition(".")
    if (
        device in available
        or any(a.partition(".")[0] == device for a in available)
        or (kind == "GPU" and index == "0" and kind in available)
    ):
        return device
    have = ", ".join(available) or "none"
    if kind in DEVICE_KINDS and (not index or index.isdigit()):
        raise BackendUnavailable(
            f"openvino backend: device {device!r} is not available here (OpenVINO sees {have}); "
            "install its driver / OpenVINO plugin, or use one of those"
        )
    raise InputError(
        f"openvino backend: unknown device {device!r}; OpenVINO names devices "
        f"{', '.join(DEVICE_KINDS)} (GPU.1: the second GPU); available here: {have}"
    )


def resolve_precision(precision: str, device: str = "CPU") -> str:
    """``precision`` itself, or for ``auto`` the fastest one this device can run that meets its bar (logged): ``bf16``
    then ``mixed`` when :data:`restyle_rt.parity.SHIP_VERDICTS` records that it met the ship bar on a CPU with this
    one's BF16 path (CPU device only), else ``fp32`` (the reference, :data:`restyle_rt.parity.AUTO_BAR`).

    Raises:
        InputError: not one of :data:`PRECISIONS` nor ``auto``.
    """
    if precision in PRECISIONS:
        return precision
    if precision != "auto":
        raise InputError(f"openvino backend: precision must be one of {PRECISIONS + ('auto',)}, got {precision!r}")
    from ...parity import meets_auto_bar, ship_verdict
    from ..hostinfo import bf16_path

    reasons = []
    for cand in ("bf16", "mixed", "fp32"):  # fastest first (INT8 needs calibrated graphs: only on request)
        if cand in BF16_PRECISIONS and device != "CPU":
            reasons.append(f"{cand}: CPU only, not {device}")
            continue
        if cand in BF16_PRECISIONS and not cpu_has_bf16():
            reasons.append(f"{cand}: this CPU has no BF16")
            continue
        ok, why = (
            ship_verdict("openvino", cand, bf16_path())
            if cand in BF16_PRECISIONS
            else meets_auto_bar("openvino-loop", cand)
        )
        if ok:
            said = "; ".join(reasons + ([f"{cand}: {why}"] if why else []))
            log.info("openvino backend: precision auto -> %s%s", cand, f" ({said})" if said else "")
            return cand
        reasons.append(f"{cand}: {why}")
    raise InputError("openvino backend: no precision meets the accuracy bar: " + "; ".join(reasons))


def _cache_dir(cache_dir: os.PathLike | None) -> Path | None:
    if cache_dir == "":
        return None
    if cache_dir is None:
        cache_dir = fsio.cache_root() / "openvino"
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def verify_io(model, io, what: str) -> None:
    """Refuse a (compiled) model whose inputs/outputs differ from the spec in names, element type, rank or static dims.

    Raises:
        ArtifactError: naming expected vs found for every mismatch.
    """
    problems = []
    for kind, want, got in (("inputs", io[0], model.inputs), ("outputs", io[1], model.outputs)):
        found = {p.get_any_name(): p for p in got}
        if sorted(found) != sorted(t.name for t in want):
            problems.append(f"{kind}: expected {[t.name for t in want]}, found {sorted(found)}")
            continue
        for t in want:
            p = found[t.name]
            if p.get_element_type().get_type_name() != {"float32": "f32"}.get(t.dtype, t.dtype):
                problems.append(f"{t.name}: expected {t.dtype}, found {p.get_element_type()}")
            shape = p.get_partial_shape()
            dims = [d.get_length() if d.is_static else BATCH for d in shape]
            if (
                len(dims) != len(t.shape)
                or any(d != BATCH and g != d for d, g in zip(t.shape, dims))
                or dims[0] != BATCH
            ):
                problems.append(f"{t.name}: expected shape {list(t.shape)}, found {shape}")
    if problems:
        raise ArtifactError(f"{what} does not match the graph contract: " + "; ".join(problems))
