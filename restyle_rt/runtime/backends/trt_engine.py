"""One deserialized TensorRT / TensorRT-RTX engine and its execution contexts, one per batch size.

Each batch size gets its own execution context whose input shapes are set once, when it is created, and never
changed: a CUDA graph captured through a context stays valid only while that context keeps the shapes it had at
capture, so a context shared between graphs of several batch sizes would replay one graph with another's shape
state. None of the contexts owns activation memory; all are bound to one block the backend allocates.

Below TensorRT 8.6 (JetPack 5's 8.5) only the first context of an engine gets optimisation profile 0; every later
one starts at profile -1, on which enqueueV3 fails, and a profile can be held by one context only
(``NvInferRuntime.h`` 8.5). There the engine keeps **one** context and reshapes it when the batch changes;
:attr:`TrtEngine.reshapes` counts those changes so the backend can drop CUDA graphs captured with other shapes.

API generations handled (what each lacks is hidden by the fakes in ``tests/fakes`` that the tests run against):

* TensorRT 8.5 (JetPack 5): ``create_execution_context_without_device_memory``, the write-only
  ``device_memory`` property, ``device_memory_size``; ``execute_async_v3`` / ``set_input_shape`` /
  ``set_tensor_address`` exist from 8.5.
* TensorRT 10.x (JetPack 6 is 10.3): ``ExecutionContextAllocationStrategy.USER_MANAGED``,
  ``set_device_memory(ptr, size)`` and ``get_device_memory_size_for_profile_v2`` (10.1+).
* TensorRT >= 10.11 / 11.x and TensorRT-RTX: ``IRuntimeConfig`` (allocation strategy, and on RTX the runtime
  cache, CUDA-graph mode and dynamic-shape kernel specialisation).
* ``is_stream_capturable``: TensorRT-RTX only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...artifacts import write_bytes_atomic
from ...errors import ArtifactError, InputError
from .. import cuda
from ..trt_compat import TrtInfo

log = logging.getLogger("restyle_rt")


class TrtEngine:
    """A deserialized engine; :meth:`context` hands out one execution context per batch size.

    Args:
        info: the TensorRT flavour in use.
        runtime: its ``Runtime``.
        plan: the serialized engine.
        name: ``"encoder"`` or ``"synthesis"`` (named in errors).
        shapes: input name -> shape without the batch dimension.
        runtime_cache: a :class:`RuntimeCache` (TensorRT-RTX) or None.
        eager_kernels: RTX only: compile the dynamic-shape kernels for a shape when the shape is set (EAGER),
            instead of running generic fallback kernels until specialised ones finish compiling in the background
            (LAZY, RTX's default). Needed when the work is captured into a CUDA graph: a graph captured while the
            fallback kernels run would replay them forever.
    """

    def __init__(
        self,
        info: TrtInfo,
        runtime,
        plan: bytes,
        name: str,
        shapes: dict[str, tuple[int, ...]],
        runtime_cache=None,
        eager_kernels: bool = False,
    ):
        trt = info.module
        self.info, self.name, self.shapes = info, name, shapes
        self.runtime_cache, self.eager_kernels = runtime_cache, eager_kernels
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialize the {name} engine (see the TensorRT log)")
        if hasattr(self.engine, "get_device_memory_size_for_profile_v2"):
            self.memory_size = int(self.engine.get_device_memory_size_for_profile_v2(0))
        elif hasattr(self.engine, "device_memory_size_v2"):
            self.memory_size = int(self.engine.device_memory_size_v2)
        else:  # TensorRT 8.5
            self.memory_size = int(self.engine.device_memory_size)
        for i in range(self.engine.num_io_tensors):
            t = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_dtype(t) != trt.float32:
                raise ArtifactError(
                    f"{name} engine tensor {t!r} is {self.engine.get_tensor_dtype(t)}, expected "
                    "float32 (graph I/O stays FP32; FP16 lives inside)"
                )
        self.settings: dict[str, str] = {}
        self.single_context = not info.is_rtx and info.version_tuple < (8, 6)
        self.reshapes = 0  # shape changes of an existing context (single-context engines only)
        self._contexts: dict[int, object] = {}
        self._batch_of: dict[int, int] = {}  # context key -> the batch its input shapes are set for
        self._configs: dict[int, object] = {}  # IRuntimeConfig per context, kept alive as long as the context
        self._memory: tuple[int, int] = (0, 0)

    # --- contexts -----------------------------------------------------------------------------------------

    def _runtime_config(self):
        trt = self.info.module
        rc = self.engine.create_runtime_config()
        rc.set_execution_context_allocation_strategy(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        self.settings["allocation"] = "USER_MANAGED (IRuntimeConfig)"
        if self.runtime_cache is not None:
            self.runtime_cache.attach(rc)
        if hasattr(trt, "CudaGraphStrategy") and hasattr(rc, "cuda_graph_strategy"):
            rc.cuda_graph_strategy = trt.CudaGraphStrategy.DISABLED  # the backend captures the loop itself
            self.settings["cuda_graph_strategy"] = "DISABLED"
        if self.info.kernel_specialization:
            strategy = "EAGER" if self.eager_kernels else "LAZY"
            rc.dynamic_shapes_kernel_specialization_strategy = getattr(
                trt.DynamicShapesKernelSpecializationStrategy, strategy
            )
            self.settings["kernel_specialization"] = strategy
        return rc

    def _new_context(self, key: int):
        trt = self.info.module
        if self.info.runtime_config:
            rc = self._runtime_config()
            self._configs[key] = rc  # the binding keeps only the engine alive; the config lives beside its context
            return self.engine.create_execution_context(rc)
        if self.info.user_managed_memory:
            self.settings["allocation"] = "USER_MANAGED"
            return self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        self.settings["allocation"] = "without_device_memory (8.5)"
        return self.engine.create_execution_context_without_device_memory()

    def context(self, batch: int):
        """The execution context for ``batch``, with its input shapes set and the shared activation memory bound.

        From TensorRT 8.6 on, each batch has its own context, created on first use and never reshaped. Below 8.6
        the engine's one context is reshaped when ``batch`` differs from its current shapes (:attr:`reshapes`).

        Raises:
            InputError: TensorRT refused the shapes (outside the engine's optimisation profile).
        """
        key = 0 if self.single_context else batch
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._new_context(key)
            if ctx is None:
                self._configs.pop(key, None)
                raise ArtifactError(f"TensorRT could not create an execution context for the {self.name} engine")
            if self._memory[0]:
                self._bind(ctx)
            self._contexts[key] = ctx
        if self._batch_of.get(key) != batch:
            for name, shape in self.shapes.items():
                if not ctx.set_input_shape(name, (batch, *shape)):
                    self._batch_of.pop(key, None)
                    raise InputError(
                        f"{self.name} engine refused input {name!r} shape {[batch, *shape]} (outside "
                        "its optimisation profile?); rebuild with `restyle-rt build --batch MIN,OPT,MAX`"
                    )
            if key in self._batch_of:
                self.reshapes += 1
            self._batch_of[key] = batch
        return ctx

    def bind_memory(self, ptr: int, size: int) -> None:
        """Give every context (present and future) the shared activation block ``[ptr, ptr + size)``."""
        if size < self.memory_size:
            raise cuda.CudaError(f"{self.name} engine needs {self.memory_size} bytes of activation memory, got {size}")
        self._memory = (int(ptr), int(size))
        for ctx in self._contexts.values():
            self._bind(ctx)

    def _bind(self, ctx) -> None:
        ptr, size = self._memory
        if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1, RTX
            ctx.set_device_memory(ptr, size)
        else:  # TensorRT 8.5 / 10.0
            ctx.device_memory = ptr

    # --- work ---------------------------------------------------------------------------------------------

    def enqueue(self, stream: cuda.Stream, batch: int, addrs: dict[str, int]) -> None:
        """Bind ``addrs`` (tensor name -> device pointer) on the batch's context and enqueue it on ``stream``.

        Raises:
            CudaError: TensorRT refused an address or the enqueue (details in the TensorRT log).
        """
        ctx = self.context(batch)
        for name, ptr in addrs.items():
            if not ctx.set_tensor_address(name, ptr):
                raise cuda.CudaError(
                    f"{self.name} engine refused the address of tensor {name!r} (see the TensorRT "
                    "log: unknown name or misaligned pointer)"
                )
        if not ctx.execute_async_v3(stream.handle):
            raise cuda.CudaError(f"{self.name} execute_async_v3 failed (see the TensorRT log)")

    def capturable(self, stream: cuda.Stream, batch: int) -> bool:
        """Whether the batch's context may be captured into a CUDA graph on ``stream``.

        TensorRT-RTX answers ``is_stream_capturable`` (False e.g. for engines built without
        ``REQUIRE_USER_ALLOCATION``); standard TensorRT has no such query: capture is attempted and a failure is
        handled by the caller.
        """
        ctx = self.context(batch)
        if not self.info.stream_capturable_query:
            return True
        return bool(ctx.is_stream_capturable(stream.handle))

    def close(self) -> None:
        self._contexts.clear()
        self._batch_of.clear()
        self._configs.clear()
        self.engine = None


class RuntimeCache:
    """TensorRT-RTX runtime (JIT kernel) cache, persisted next to the engines."""

    def __init__(self, path: Path):
        self.path, self.cache = Path(path), None

    def attach(self, runtime_config) -> None:
        if self.cache is None:
            self.cache = runtime_config.create_runtime_cache()
            if self.path.is_file() and not self.cache.deserialize(self.path.read_bytes()):
                log.info("TensorRT-RTX runtime cache %s does not match this machine; rebuilding it", self.path)
        if not runtime_config.set_runtime_cache(self.cache):
            log.warning("TensorRT-RTX refused the runtime cache; kernels are JIT-compiled without it")

    def save(self) -> None:
        if self.cache is not None:
            try:
                write_bytes_atomic(self.path, self.cache.serialize())
            except OSError as e:  # read-only artifacts: the cache is an optimisation only
                log.warning("could not save the TensorRT-RTX runtime cache to %s: %s", self.path, e)
