"""Which TensorRT is here: standard ``tensorrt`` (desktop 10.x/11.x, Jetson 8.5/10.3) or TensorRT-RTX.

One import point for both flavours, their version, and the feature flags the builder and the backend branch on.
Selection order: ``RESTYLE_RT_TRT=tensorrt|tensorrt-rtx`` when set, else ``tensorrt``, else TensorRT-RTX
(``tensorrt_rtx``, or the ``tensorrt_rtx_bindings`` module of the ``tensorrt-rtx-cu13-bindings`` wheel).

Feature facts used (from NVIDIA's TensorRT and TensorRT-RTX documentation; docs/architecture.md):

* strong typing: the ``STRONGLY_TYPED`` network flag exists from 9.x/10.x; weak typing is deprecated in 10.12 and
  removed in 11.0; TensorRT-RTX is strongly typed only. We build strongly typed where the flag exists and the
  version is >= 10.12 (or RTX); older TensorRT gets ``BuilderFlag.FP16`` plus FP32 layer constraints.
* timing cache: honoured by standard TensorRT; no effect in TensorRT-RTX (it forces a GPU query during AOT).
* compute capabilities: TensorRT-RTX builds ahead of time for the list set with
  ``IBuilderConfig.set_compute_capability`` (no GPU needed); standard TensorRT builds for the GPU it runs on.
* activation memory: ``ExecutionContextAllocationStrategy.USER_MANAGED`` (10.x / RTX) or
  ``create_execution_context_without_device_memory`` (8.5).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendUnavailable

log = logging.getLogger("restyle_rt")

TENSORRT, TENSORRT_RTX = "tensorrt", "tensorrt-rtx"
_MODULES = {TENSORRT: ("tensorrt",), TENSORRT_RTX: ("tensorrt_rtx", "tensorrt_rtx_bindings")}
ENV = "RESTYLE_RT_TRT"


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = re.match(r"\d*", part).group()  # leading digits: "0b1" -> 0
        out.append(int(digits) if digits else 0)
    return tuple(out)


@dataclass(frozen=True)
class TrtInfo:
    """An imported TensorRT flavour and what it supports.

    Attributes:
        flavour: ``"tensorrt"`` or ``"tensorrt-rtx"``.
        version: the module's ``__version__``.
        module: the imported module (same API surface for both flavours).
    """

    flavour: str
    version: str
    module: Any = field(compare=False, repr=False)

    @property
    def is_rtx(self) -> bool:
        return self.flavour == TENSORRT_RTX

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return _version_tuple(self.version)

    @property
    def has_strongly_typed_flag(self) -> bool:
        return hasattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")

    @property
    def strongly_typed(self) -> bool:
        """Build strongly typed (precision from the ONNX): RTX, TensorRT >= 10.12 (11.x: the only mode)."""
        return self.is_rtx or (self.has_strongly_typed_flag and self.version_tuple >= (10, 12))

    @property
    def precision_flags(self) -> bool:
        """``BuilderFlag.FP16`` exists (TensorRT <= 10.x; removed in 11.0, unsupported in RTX)."""
        return not self.is_rtx and hasattr(self.module.BuilderFlag, "FP16")

    @property
    def explicit_batch_flag(self) -> bool:
        """8.x needs ``EXPLICIT_BATCH`` at network creation; 10.x ignores it, 11.x removed it."""
        return self.version_tuple < (10,) and hasattr(self.module.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")

    @property
    def timing_cache(self) -> bool:
        return not self.is_rtx and hasattr(self.module.IBuilderConfig, "create_timing_cache")

    @property
    def compute_capability_api(self) -> bool:
        """AOT target list (TensorRT-RTX ``IBuilderConfig.set_compute_capability``)."""
        return hasattr(self.module.IBuilderConfig, "set_compute_capability")

    @property
    def user_managed_memory(self) -> bool:
        return hasattr(self.module, "ExecutionContextAllocationStrategy")

    @property
    def runtime_config(self) -> bool:
        """RTX (and TRT >= 10.11) ``IRuntimeConfig``: allocation strategy, runtime (JIT) cache, CUDA-graph mode."""
        return hasattr(self.module.ICudaEngine, "create_runtime_config")

    @property
    def stream_capturable_query(self) -> bool:
        """``IExecutionContext.is_stream_capturable``: TensorRT-RTX only (standard TensorRT 10.x/11.x has none)."""
        return hasattr(self.module.IExecutionContext, "is_stream_capturable")

    @property
    def kernel_specialization(self) -> bool:
        """RTX ``IRuntimeConfig.dynamic_shapes_kernel_specialization_strategy`` (LAZY default, EAGER, NONE)."""
        return hasattr(self.module, "DynamicShapesKernelSpecializationStrategy") and hasattr(
            getattr(self.module, "IRuntimeConfig", None), "dynamic_shapes_kernel_specialization_strategy"
        )

    @property
    def engine_validity(self) -> bool:
        """RTX ``Runtime.get_engine_validity`` (checks a plan against this machine before deserializing)."""
        return hasattr(self.module.Runtime, "get_engine_validity")

    def features(self) -> dict:
        """All feature flags, for logs and manifest records."""
        names = (
            "strongly_typed",
            "precision_flags",
            "timing_cache",
            "compute_capability_api",
            "user_managed_memory",
            "runtime_config",
            "engine_validity",
        )
        return {n: bool(getattr(self, n)) for n in names}


_CUDA_DISTS = {
    "tensorrt": ("tensorrt_cu{}_bindings", "tensorrt_cu{}_libs", "tensorrt_cu{}"),
    "tensorrt_rtx": ("tensorrt_rtx_cu{}_bindings",),
    "tensorrt_rtx_bindings": ("tensorrt_rtx_cu{}_bindings",),
}


def trt_cuda_major(info: TrtInfo) -> int | None:
    """CUDA major the TensorRT wheel was built for (``tensorrt-cu12``, ``tensorrt_rtx_cu13_bindings``: 12, 13).

    Read from which per-CUDA distribution is installed; None when none is (JetPack's apt packages, source builds).
    """
    return _dist_cuda_major(getattr(info.module, "__name__", "").split(".")[0])


@functools.cache
def _dist_cuda_major(top: str) -> int | None:
    import importlib.metadata as md

    for major in (13, 12, 11, 14):
        for pattern in _CUDA_DISTS.get(top, ()):
            try:
                md.version(pattern.format(major))
            except md.PackageNotFoundError:
                continue
            return major
    return None


def _import(flavour: str) -> TrtInfo:
    errors = []
    for name in _MODULES[flavour]:
        try:
            mod = importlib.import_module(name)
        except ImportError as e:  # includes missing shared libraries
            errors.append(f"{name}: {e}")
            continue
        return TrtInfo(flavour, str(getattr(mod, "__version__", "0")), mod)
    raise ImportError("; ".join(errors))


@functools.cache
def load_trt(flavour: str = "") -> TrtInfo:
    """Import TensorRT (``flavour`` or ``$RESTYLE_RT_TRT``, else the first that imports).

    Raises:
        BackendUnavailable: naming what to install.
    """
    wanted = flavour or os.environ.get(ENV, "")
    order = (wanted,) if wanted else (TENSORRT, TENSORRT_RTX)
    errors = []
    for f in order:
        if f not in _MODULES:
            raise BackendUnavailable(f"unknown TensorRT flavour {f!r} (from {ENV}?); use 'tensorrt' or 'tensorrt-rtx'")
        try:
            info = _import(f)
        except ImportError as e:
            errors.append(str(e))
            continue
        log.debug("TensorRT flavour %s %s, features %s", info.flavour, info.version, info.features())
        return info
    raise BackendUnavailable(
        "no TensorRT importable (" + "; ".join(errors) + "). Install `pip install restyle-rt[trt]` (CUDA 12; "
        "[trt-cu13] for CUDA 13, [trt-cu11] for JetPack 5) plus the "
        "`tensorrt` wheel matching your CUDA (Jetson: JetPack's python3-libnvinfer), or `restyle-rt[trt-rtx]`"
    )


def try_load_trt(flavour: str = ""):
    """:func:`load_trt`, or None when no flavour imports."""
    try:
        return load_trt(flavour)
    except BackendUnavailable:
        return None
