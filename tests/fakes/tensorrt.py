"""Fake TensorRT modules, one per API generation the backend claims, on a :class:`~fakes.gpu.FakeGpu`.

Every member is checked against the installed TensorRT-RTX bindings (``tensorrt_rtx_bindings``): a member the fake
offers must exist there with the same kind (method / property, settable or not) and every call must bind to one of
its pybind11 overloads with arguments of the declared kinds. Members the installed RTX bindings lack but older
standard TensorRT has are hand-declared in :data:`DECLARED`, each with its source. What a generation lacks is
absent from its classes, so ``hasattr`` answers as that generation would.

Generation facts (V: verified; I: inference, said so):

======================================== ===== ===== ===== ===== ================================================
member                                     8.5  10.3  11.1   RTX  source
======================================== ===== ===== ===== ===== ================================================
execute_async_v3, set_input_shape,          y     y     y     y   V: shared/reference §"enqueueV3 ... from TRT 8.5"
set_tensor_address, num_io_tensors                                 (PaddlePaddle PR 60807); RTX: installed bindings
create_execution_context_without_device_    y     y     -     -   V 8.5 (pyCore.cpp 8.x); RTX: absent (installed);
memory, device_memory_size                                         I: removed in 11.0 with the APIs deprecated in 10.x
device_memory (write-only property)         y     y     y     y   V: pyCore.cpp (``def_property("device_memory",
                                                                   nullptr, ...)``); RTX installed
ExecutionContextAllocationStrategy          -     y     y     y   I: 10.0 (the 10.x USER_MANAGED API); RTX installed
set_device_memory(ptr, size),               -     y     y     y   I: 10.1 (setDeviceMemoryV2 / *V2 sizes; public
get_device_memory_size_for_profile_v2,                             code marks ``TensorRT < 10.1`` fallbacks); RTX
device_memory_size_v2                                              installed
IRuntimeConfig (allocation strategy)        -     -     y     y   I: 10.11+ (restyle_rt.runtime.trt_compat); RTX V
RTX runtime config: runtime cache,          -     -     -     y   V: installed RTX bindings; I: not in standard
CudaGraphStrategy, dynamic-shape kernel                            TensorRT
specialisation, get_engine_validity
is_stream_capturable                        -     -     -     y   V: shared/reference ("Standard TensorRT (10.x/
                                                                   11.x) has no isStreamCapturable; only RTX")
======================================== ===== ===== ===== ===== ================================================

Behavioural rules per generation (enforced, not only named):

* **Profiles below 8.6** (8.5): the first context of an engine gets optimisation profile 0, every later one -1
  while the first lives; ``execute_async_v3`` on profile -1 fails (returns False and logs), as TensorRT 8.5's
  ``NvInferRuntime.h`` says ("all calls to enqueueV2()/enqueueV3()/executeV2() will fail until a valid profile
  index has been set"; "Profile 0 has been chosen by another IExecutionContext"). V: the 8.5 header text quoted in
  the issue. From 8.6 every context starts on profile 0 (I: the same header in 8.6+; not inspected here).
* **Runtime config lifetime** (``IRuntimeConfig``, 11.1 and RTX): a context whose config has been freed refuses
  to enqueue with :class:`FakeGpuMisuse` (*stricter*, I: the binding keeps only the engine alive, and NVIDIA's RTX
  demo keeps the config for the context's whole life; whether TensorRT reads it after creation is not documented).
* **Shapes at replay**: a CUDA graph replayed after a captured context's input shapes changed raises
  :class:`FakeGpuMisuse` (tests/fakes/gpu.py).

Semantics: a plan is :func:`make_plan` bytes (a JSON header: generation, profile, builder flags, activation
memory size; then the ONNX graph) and an engine runs it with ONNX Runtime, reading and writing the simulated
device memory at the bound addresses, when the stream work runs. ``execute_async_v3`` returns False (as TensorRT
does) for an unknown stream handle, unset shapes/addresses, missing activation memory, or an allocation inside a
capture; ``is_stream_capturable`` is True only for RTX engines built with ``REQUIRE_USER_ALLOCATION``. Capturing
an RTX context whose kernel specialisation is LAZY raises FakeGpuMisuse (*stricter*: on a GPU the graph would
silently record the generic fallback kernels).
"""

from __future__ import annotations

import json
import logging
import types
import weakref
from dataclasses import dataclass

import numpy as np

from .gpu import FakeGpu, FakeGpuMisuse, Op
from .surface import SurfaceError, mirror_class

log = logging.getLogger("fake_tensorrt")
MAGIC = b"FAKEPLAN"

# Members of older standard TensorRT that the installed RTX bindings lack: pybind11 parameter text after ``self``.
DECLARED = {
    "create_execution_context_without_device_memory": ") -> IExecutionContext",  # 8.x pyCore.cpp
    "device_memory_size": "",  # property, 8.x pyCore.cpp
}


@dataclass(frozen=True)
class Generation:
    """One TensorRT API generation: what it has (see the module table)."""

    key: str
    flavour: str
    version: str
    module_name: str
    alloc_strategy: bool
    memory_v2: bool
    without_device_memory: bool
    runtime_config: bool
    rtx: bool
    shared_profile: bool = True  # every context starts on profile 0 (8.6+); False: only the first one (8.5)


GENERATIONS = {
    "8.5": Generation("8.5", "tensorrt", "8.5.2.2", "tensorrt", False, False, True, False, False, False),
    "10.3": Generation("10.3", "tensorrt", "10.3.0.30", "tensorrt", True, True, True, False, False),
    "11.1": Generation("11.1", "tensorrt", "11.1.0.5", "tensorrt", True, True, False, True, False),
    "rtx": Generation("rtx", "tensorrt-rtx", "1.7.1.116", "tensorrt_rtx_bindings", True, True, False, True, True),
}


def make_plan(
    generation: str,
    onnx_bytes: bytes,
    profile,
    flags=(),
    memory: int = 4096,
    unsafe_in_capture: bool = False,
    onnx_path: str = "",
) -> bytes:
    """A fake serialized engine: header + ONNX graph (``profile`` = [min, opt, max] batch).

    With ``onnx_path`` (a graph with external data) the plan names the file instead of embedding it.
    """
    head = json.dumps(
        {
            "generation": generation,
            "profile": list(profile),
            "flags": list(flags),
            "memory": memory,
            "unsafe_in_capture": unsafe_in_capture,
            "onnx_path": onnx_path,
        }
    ).encode()
    return MAGIC + len(head).to_bytes(4, "little") + head + bytes(onnx_bytes)


def _parse_plan(plan: bytes):
    plan = bytes(plan)
    if not plan.startswith(MAGIC):
        return None, None
    n = int.from_bytes(plan[8:12], "little")
    return json.loads(plan[12 : 12 + n]), plan[12 + n :]


def make_trt(generation: str, gpu: FakeGpu):
    """A module-like namespace with the classes and enums of ``generation`` running on ``gpu``."""
    import tensorrt_rtx_bindings as real

    gen = GENERATIONS[generation]
    mod = types.SimpleNamespace(
        __name__=gen.module_name,
        __version__=gen.version,
        float32=real.float32,
        _gen=gen,
        _gpu=gpu,
        _contexts=weakref.WeakSet(),
    )
    if gen.alloc_strategy:
        mod.ExecutionContextAllocationStrategy = real.ExecutionContextAllocationStrategy
    if gen.rtx:
        for name in (
            "CudaGraphStrategy",
            "DynamicShapesKernelSpecializationStrategy",
            "EngineValidity",
            "EngineInvalidityDiagnostics",
        ):
            setattr(mod, name, getattr(real, name))
    mod.Logger = mirror_class(
        "Logger",
        {"__init__": lambda self, min_severity=real.Logger.WARNING: None, "WARNING": real.Logger.WARNING},
        real.Logger,
        mod,
    )
    if gen.runtime_config:
        mod.IRuntimeConfig = mirror_class("IRuntimeConfig", _runtime_config_members(gen, mod), real.IRuntimeConfig, mod)
    if gen.rtx:
        mod.IRuntimeCache = mirror_class("IRuntimeCache", _cache_members(), real.IRuntimeCache, mod)
    mod.IExecutionContext = mirror_class(
        "IExecutionContext", _context_members(gen, mod), real.IExecutionContext, mod, DECLARED
    )
    mod.ICudaEngine = mirror_class("ICudaEngine", _engine_members(gen, mod), real.ICudaEngine, mod, DECLARED)
    mod.Runtime = mirror_class("Runtime", _runtime_members(gen, mod), real.Runtime, mod)
    return mod


# --- runtime / engine --------------------------------------------------------------------------------------------


def _runtime_members(gen: Generation, mod) -> dict:
    def deserialize_cuda_engine(self, serialized_engine):
        head, onnx_bytes = _parse_plan(serialized_engine)
        if head is None or head["generation"] != gen.key:
            log.error("fake %s: plan is not for this TensorRT generation", gen.key)
            return None
        return mod.ICudaEngine(head, onnx_bytes)

    members = {"__init__": lambda self, logger: None, "deserialize_cuda_engine": deserialize_cuda_engine}
    if gen.rtx:
        members["get_engine_validity"] = lambda self, buffer: (
            (mod.EngineValidity.VALID if _parse_plan(buffer)[0] else mod.EngineValidity.INVALID),
            0,
        )
    return members


def _engine_members(gen: Generation, mod) -> dict:
    import onnxruntime as ort

    def __init__(self, head, onnx_bytes):
        self._head = head
        self._sess = ort.InferenceSession(head.get("onnx_path") or onnx_bytes, providers=["CPUExecutionProvider"])
        self._inputs = {i.name: i.shape for i in self._sess.get_inputs()}
        self._outputs = {o.name: o.shape for o in self._sess.get_outputs()}
        self._names = list(self._inputs) + list(self._outputs)
        self._profile0 = None  # weakref to the context holding profile 0 (8.5)

    def _profile_for_new_context(self):
        if gen.shared_profile:
            return 0
        holder = self._profile0() if self._profile0 is not None else None
        return -1 if holder is not None else 0

    def create_execution_context(self, *args):
        if args and not gen.alloc_strategy:
            raise SurfaceError("TensorRT 8.5 create_execution_context() takes no allocation strategy")
        arg = args[0] if args else None
        rc = arg if gen.runtime_config and isinstance(arg, mod.IRuntimeConfig) else None
        if rc is not None:
            user = rc._strategy == mod.ExecutionContextAllocationStrategy.USER_MANAGED
        else:
            user = arg is not None and arg == mod.ExecutionContextAllocationStrategy.USER_MANAGED
        return mod.IExecutionContext(self, user, rc)

    members = {
        "_profile_for_new_context": _profile_for_new_context,
        "__init__": __init__,
        "num_io_tensors": property(lambda self: len(self._names)),
        "get_tensor_name": lambda self, index: self._names[index],
        "get_tensor_dtype": lambda self, name: mod.float32,
        "create_execution_context": create_execution_context,
    }
    if gen.without_device_memory:
        members["create_execution_context_without_device_memory"] = lambda self: mod.IExecutionContext(self, True)
        members["device_memory_size"] = property(lambda self: self._head["memory"])
    if gen.memory_v2:
        members["get_device_memory_size_for_profile_v2"] = lambda self, profile_index: self._head["memory"]
        members["device_memory_size_v2"] = property(lambda self: self._head["memory"])
    if gen.runtime_config:
        members["create_runtime_config"] = lambda self: mod.IRuntimeConfig()
    return members


def _runtime_config_members(gen: Generation, mod) -> dict:
    def __init__(self):
        self._strategy, self._cache = None, None
        self._graph, self._kernels = None, "LAZY"

    def set_strategy(self, strategy):
        self._strategy = strategy

    members = {
        "__init__": __init__,
        "set_execution_context_allocation_strategy": set_strategy,
        "get_execution_context_allocation_strategy": lambda self: self._strategy,
    }
    if gen.rtx:
        import tensorrt_rtx_bindings as real

        def set_cache(self, cache=None):
            self._cache = cache
            return True

        def set_kernels(self, v):
            if not isinstance(v, real.DynamicShapesKernelSpecializationStrategy):
                raise SurfaceError(f"dynamic_shapes_kernel_specialization_strategy = {v!r}: not the enum")
            self._kernels = v.name

        def set_graph(self, v):
            if not isinstance(v, real.CudaGraphStrategy):
                raise SurfaceError(f"cuda_graph_strategy = {v!r}: not the enum")
            self._graph = v.name

        members.update(
            {
                "create_runtime_cache": lambda self: mod.IRuntimeCache(),
                "set_runtime_cache": set_cache,
                "get_runtime_cache": lambda self: self._cache,
                "dynamic_shapes_kernel_specialization_strategy": property(
                    lambda self: getattr(real.DynamicShapesKernelSpecializationStrategy, self._kernels), set_kernels
                ),
                "cuda_graph_strategy": property(lambda self: self._graph, set_graph),
            }
        )
    return members


def _cache_members() -> dict:
    def __init__(self):
        self._blob = b"fake-runtime-cache"

    def deserialize(self, blob):
        ok = bytes(blob).startswith(b"fake-runtime-cache")
        return ok

    return {
        "__init__": __init__,
        "deserialize": deserialize,
        "serialize": lambda self: bytearray(self._blob),
        "reset": lambda self: True,
    }


# --- execution context -------------------------------------------------------------------------------------------


def _context_members(gen: Generation, mod) -> dict:
    gpu: FakeGpu = mod._gpu

    def __init__(self, engine, user_managed, rc=None):
        self._engine, self._user = engine, user_managed
        self._rc = weakref.ref(rc) if rc is not None else None  # the real binding does not keep the config alive
        self._profile = engine._profile_for_new_context()
        if self._profile == 0 and not gen.shared_profile:
            engine._profile0 = weakref.ref(self)
        self._shapes: dict[str, tuple] = {}
        self._addrs: dict[str, int] = {}
        self._memory = None
        self._shape_version = 0
        mod._contexts.add(self)  # weak: a context dies when its owner drops it, as on TensorRT

    def set_input_shape(self, name, shape):
        want = self._engine._inputs.get(name)
        lo, _, hi = self._engine._head["profile"]
        shape = tuple(int(d) for d in shape)
        if (
            want is None
            or len(shape) != len(want)
            or not lo <= shape[0] <= hi
            or any(isinstance(w, int) and w != d for w, d in zip(want[1:], shape[1:]))
        ):
            log.error("fake: set_input_shape(%s, %s) outside the engine's profile", name, shape)
            return False
        if self._shapes.get(name) != shape:
            self._shapes[name] = shape
            self._shape_version += 1
        return True

    def set_tensor_address(self, name, memory):
        if name not in self._engine._names or int(memory) % 256:  # NvInferRuntime.h: "must have at least
            return False  # 256-byte alignment" (stricter: refused)
        self._addrs[name] = int(memory)
        return True

    def set_device_memory(self, memory, size):
        if size < self._engine._head["memory"]:
            raise FakeGpuMisuse(f"set_device_memory: {size} bytes < the engine's {self._engine._head['memory']}")
        self._memory = int(memory)

    def _set_device_memory_prop(self, memory):
        self._memory = int(memory)

    def execute_async_v3(self, stream_handle):
        stream = gpu.stream(stream_handle)
        if stream is None:
            log.error("fake: execute_async_v3 got %r, not a live stream handle", stream_handle)
            return False
        if self._profile < 0:
            log.error(
                "fake %s: execute_async_v3 on a context with optimisation profile -1 (profile 0 has been "
                "chosen by another IExecutionContext)",
                gen.key,
            )
            return False
        rc = None
        if self._rc is not None:
            rc = self._rc()
            if rc is None:
                raise FakeGpuMisuse(
                    "enqueue on a context whose IRuntimeConfig was freed (keep the config alive as long as its context)"
                )
        op = _enqueue_op(self, gen, gpu)
        if op is None:
            return False
        if stream.capture is not None and _allocates(self, gen):
            gpu._unsafe_during_capture(f"{self._engine._head['generation']} enqueue allocating")
            return False
        if stream.capture is not None and gen.rtx and rc is not None and rc._kernels == "LAZY":
            raise FakeGpuMisuse(
                "captured an RTX context with LAZY dynamic-shape kernel specialisation: the graph "
                "records the generic fallback kernels (set EAGER before capturing)"
            )
        gpu.submit(stream, op)
        return True

    members = {
        "__init__": __init__,
        "set_input_shape": set_input_shape,
        "set_tensor_address": set_tensor_address,
        "execute_async_v3": execute_async_v3,
        "device_memory": property(None, _set_device_memory_prop),
    }
    if gen.memory_v2:
        members["set_device_memory"] = set_device_memory
    if gen.rtx:

        def is_stream_capturable(self, stream):
            return gpu.stream(stream) is not None and "REQUIRE_USER_ALLOCATION" in self._engine._head["flags"]

        members["is_stream_capturable"] = is_stream_capturable
    return members


def _allocates(ctx, gen: Generation) -> bool:
    """Whether this enqueue would allocate (TensorRT's own allocation: not allowed inside a capture)."""
    head = ctx._engine._head
    return head["unsafe_in_capture"] or (gen.rtx and "REQUIRE_USER_ALLOCATION" not in head["flags"])


def _enqueue_op(ctx, gen: Generation, gpu: FakeGpu):
    """The stream work of one enqueue with the shapes and addresses frozen now, or None (and a log) if invalid."""
    eng = ctx._engine
    if ctx._user and ctx._memory is None:
        log.error("fake: user-managed context without device memory")
        return None
    if ctx._memory is not None:
        gpu.device_view(ctx._memory, eng._head["memory"])
    if set(ctx._shapes) != set(eng._inputs) or set(ctx._addrs) != set(eng._names):
        log.error("fake: shapes %s / addresses %s not all set", sorted(ctx._shapes), sorted(ctx._addrs))
        return None
    shapes, addrs = dict(ctx._shapes), dict(ctx._addrs)
    b = next(iter(shapes.values()))[0]
    out_shapes = {n: (b, *s[1:]) for n, s in eng._outputs.items()}
    for n, s in {**shapes, **out_shapes}.items():
        gpu.device_view(addrs[n], int(np.prod(s)) * 4)

    def run():
        feeds = {
            n: gpu.device_view(addrs[n], int(np.prod(s)) * 4).view(np.float32).reshape(s).copy()
            for n, s in shapes.items()
        }
        for name, val in zip(eng._outputs, eng._sess.run(None, feeds)):
            gpu.device_view(addrs[name], val.nbytes)[:] = np.ascontiguousarray(val, np.float32).view(np.uint8).ravel()

    return Op(run, f"{eng._head['generation']} enqueue", ctx, ctx._shape_version)
