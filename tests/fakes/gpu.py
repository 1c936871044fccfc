"""A simulated CUDA device behind the real ``cuda.bindings.runtime`` surface (names, arity, argument types).

Each CUDA major has its own surface (``FakeGpu(cuda_major=11 | 12 | 13)``): the installed cuda-python's is read
live; the others' come from ``cudart_signatures.json`` (recorded from the real packages by
``gen_cudart_signatures.py``), so e.g. ``cudaGraphInstantiate(graph, 0)`` is refused on 11 as cuda-python 11 refuses
it, and a function a major lacks is absent.

What it enforces, as CUDA does (or, marked *stricter*, where CUDA's behaviour is undefined):

* Handles (streams, events, graphs, executable graphs) are opaque objects only the creating call produces; their
  ``int()`` is the handle value and ``getPtr()`` a host address, as in cuda-bindings. A call given anything else
  (a host pointer, a ``getPtr()`` result, a destroyed handle) fails with ``cudaErrorInvalidResourceHandle``.
* Device memory lives in its own address range that host code cannot dereference; copies check both ends: the
  direction matches ``cudaMemcpyKind`` and the bytes lie inside one live allocation.
* Streams are asynchronous: work runs at ``cudaStreamSynchronize`` (or another synchronising call), so host code
  that reads pinned memory before synchronising sees stale bytes, as it may on a GPU.
* A capturing stream records work instead of running it. ``cudaStreamSynchronize`` on it, and ``cudaMalloc``,
  ``cudaMallocHost``, ``cudaFree``, ``cudaFreeHost``, synchronous ``cudaMemcpy`` while this thread captures, return
  ``cudaErrorStreamCaptureUnsupported`` and invalidate the capture; ``cudaStreamEndCapture`` then returns
  ``cudaErrorStreamCaptureInvalidated`` and no graph.
* *Stricter*: replaying a graph whose captured TensorRT enqueue used an execution context whose input shapes have
  changed since the capture raises :class:`FakeGpuMisuse` (on a GPU: the replay runs with the stale state).
* ``live()`` counts what is still allocated, so tests can check that nothing leaks.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .surface import mirror_function, mirror_recorded

SIGNATURES = Path(__file__).with_name("cudart_signatures.json")

DEVICE_BASE = 0x0DE0_0000_0000  # device addresses: a range no host allocation uses
_tokens = itertools.count(0x5EED_0010, 0x10)


class FakeGpuMisuse(AssertionError):
    """Use of the simulated device that is undefined behaviour on a real GPU (stricter than CUDA)."""


@functools.cache
def recorded(major: int) -> dict:
    """The recorded cudart surface of cuda-python ``major``: its entry of ``cudart_signatures.json``."""
    table = json.loads(SIGNATURES.read_text())
    if str(major) not in table:
        raise AssertionError(f"no recorded cudart surface for CUDA {major}: run tests/fakes/gen_cudart_signatures.py")
    return table[str(major)]


def installed_major(real) -> int:
    """CUDA major of the installed cuda-bindings (``cudaRuntimeGetVersion`` needs no GPU)."""
    return int(real.cudaRuntimeGetVersion()[1]) // 1000


class Handle:
    """An opaque cuda-bindings-like handle: ``int(h)`` is its value, ``getPtr()`` the wrapper's host address."""

    def __init__(self, kind: str):
        self.kind, self.value = kind, next(_tokens)
        self._storage = ctypes.c_uint64(self.value)

    def __int__(self):
        return self.value

    __index__ = __int__

    def getPtr(self):  # noqa: N802 - cuda-bindings' name
        return ctypes.addressof(self._storage)

    def __repr__(self):
        return f"<{self.kind} {self.value:#x}>"


class _Stream:
    def __init__(self, handle: Handle):
        self.handle, self.pending, self.capture = handle, [], None


class _Capture:
    def __init__(self, stream: _Stream):
        self.stream, self.ops, self.invalid = stream, [], None


class Op:
    """One unit of stream work; ``context``/``shape_version`` identify a TensorRT enqueue (checked at replay)."""

    def __init__(self, run: Callable[[], None], what: str, context=None, shape_version=None):
        self.run, self.what, self.context, self.shape_version = run, what, context, shape_version


class FakeGpu:
    """The device, its driver and a fake ``cuda.bindings.runtime`` (:meth:`cudart`).

    Args:
        devices: visible devices.
        driver_version: ``cudaDriverGetVersion`` (0: no driver installed; default ``cuda_major * 1000``).
        count_error: a ``cudaError_t`` name ``cudaGetDeviceCount`` returns instead of success.
        cc: compute capability of device 0.
        cuda_major: the cuda-python major whose surface :meth:`cudart` has (the installed one is read live, others
            from ``cudart_signatures.json``); enums are the installed module's, limited to the major's members.
    """

    def __init__(
        self,
        devices: int = 1,
        driver_version: int | None = None,
        count_error: str = "",
        cc=(8, 6),
        cuda_major: int = 13,
    ):
        from cuda.bindings import runtime as real

        self.real, self.E = real, real.cudaError_t
        self.cuda_major = cuda_major
        self.table = None if cuda_major == installed_major(real) else recorded(cuda_major)
        driver_version = cuda_major * 1000 if driver_version is None else driver_version
        self.devices, self.driver_version, self.count_error, self.cc = devices, driver_version, count_error, cc
        self.mem: dict[int, np.ndarray] = {}  # device base -> bytes
        self._bases: list[int] = []
        self._next = DEVICE_BASE
        self.pinned: dict[int, np.ndarray] = {}  # host address -> bytes
        self.streams: dict[int, _Stream] = {}
        self.graphs: dict[int, list[Op]] = {}
        self.execs: dict[int, list[Op]] = {}
        self.events: dict[int, Handle] = {}
        self.captures: list[_Capture] = []
        self.launches = 0
        self.captures_begun = 0

    # --- bookkeeping --------------------------------------------------------------------------------------

    def live(self) -> dict:
        """What is still allocated (all zero after a clean shutdown)."""
        return {
            "device": len(self.mem),
            "pinned": len(self.pinned),
            "streams": len(self.streams),
            "graphs": len(self.graphs),
            "graph_execs": len(self.execs),
            "events": len(self.events),
        }

    def stream(self, handle) -> _Stream | None:
        """The live stream whose handle value is ``int(handle)``, else None."""
        try:
            return self.streams.get(int(handle))
        except TypeError:
            return None

    def device_view(self, ptr: int, nbytes: int) -> np.ndarray:
        """The bytes ``[ptr, ptr + nbytes)`` of one live device allocation.

        Raises:
            FakeGpuMisuse: the range is not inside one live allocation.
        """
        i = bisect.bisect_right(self._bases, ptr) - 1
        if i >= 0:
            base = self._bases[i]
            buf = self.mem[base]
            if ptr + nbytes <= base + buf.size:
                return buf[ptr - base : ptr - base + nbytes]
        raise FakeGpuMisuse(f"device range [{ptr:#x}, +{nbytes}) is not inside a live cudaMalloc allocation")

    def is_device(self, ptr: int) -> bool:
        return DEVICE_BASE <= ptr < self._next

    def submit(self, stream: _Stream, op: Op) -> None:
        (stream.capture.ops if stream.capture else stream.pending).append(op)

    def flush(self, stream: _Stream) -> None:
        while stream.pending:
            stream.pending.pop(0).run()

    def _unsafe_during_capture(self, what: str):
        """cudaErrorStreamCaptureUnsupported if this thread captures (and the capture is invalidated)."""
        live = [c for c in self.captures if c.invalid is None]
        for c in live:
            c.invalid = what
        return self.E.cudaErrorStreamCaptureUnsupported if live else None

    # --- the runtime API ----------------------------------------------------------------------------------

    def cudart(self):
        """A namespace with the real module's enums and this device's implementations of its functions."""
        return _Cudart(self)


class _Cudart:
    """Attribute access resolves real enums/constants; functions must be implemented here and exist for real.

    For a major read from the table, a function the table records as absent (``null``) is absent here too, and a
    function missing from the table makes the fake fail to build (rerun ``gen_cudart_signatures.py``).
    """

    _PASS = (
        "cudaError_t",
        "cudaMemcpyKind",
        "cudaDeviceAttr",
        "cudaStreamCaptureMode",
        "cudaStreamCaptureStatus",
        "cudaStreamNonBlocking",
        "cudaStreamDefault",
    )

    def __init__(self, gpu: FakeGpu):
        self._gpu = gpu
        table = gpu.table
        impl = _IMPLS.get(gpu.cuda_major, _Impl)(gpu)
        for name in dir(impl):
            if not name.startswith("cuda"):
                continue
            if table is None:
                setattr(self, name, mirror_function(gpu.real, name, getattr(impl, name)))
                continue
            if name not in table["functions"]:
                raise AssertionError(
                    f"fake implements {name}, which cudart_signatures.json does not record for CUDA "
                    f"{gpu.cuda_major}: rerun tests/fakes/gen_cudart_signatures.py"
                )
            if table["functions"][name] is not None:
                setattr(
                    self,
                    name,
                    mirror_recorded(table["functions"][name], gpu.real, name, getattr(impl, name), table["package"]),
                )

    def __getattr__(self, name):
        table = self._gpu.table
        if name in self._PASS:
            if table is None:
                return getattr(self._gpu.real, name)
            if name in table["constants"] and table["constants"][name] is not None:
                return table["constants"][name]
            if table["enums"].get(name) is not None:
                return _EnumView(getattr(self._gpu.real, name), table["enums"][name], table["package"])
        elif table is None and hasattr(self._gpu.real, name) or table is not None and table["functions"].get(name):
            raise AttributeError(
                f"fake cudart does not implement {name} (the real module has it): add it to "
                "tests/fakes/gpu.py or do not call it"
            )
        elif table is not None and name not in table["functions"] and hasattr(self._gpu.real, name):
            raise AttributeError(
                f"fake cudart does not implement {name}, and cudart_signatures.json does not record "
                f"it for CUDA {self._gpu.cuda_major}: add it to tests/fakes/gpu.py, then rerun "
                "tests/fakes/gen_cudart_signatures.py"
            )
        module = "cuda.bindings.runtime" if table is None else f"cudart of {table['package']}"
        raise AttributeError(f"module {module!r} has no attribute {name!r}")


class _EnumView:
    """An installed enum class limited to the members another major's cuda-python has (they are the real members)."""

    def __init__(self, enum, members, package: str):
        self._enum, self._members, self._package = enum, frozenset(members), package

    def __getattr__(self, name):
        if name in self._enum.__members__ and name not in self._members:
            raise AttributeError(f"{self._enum.__name__} of {self._package} has no member {name!r}")
        return getattr(self._enum, name)

    def __call__(self, *args):
        return self._enum(*args)


class _Impl:  # noqa: D101 - one method per cuda-bindings function, same names and parameters
    def __init__(self, gpu: FakeGpu):
        self.g, self.E = gpu, gpu.E

    # device / driver
    def cudaGetDeviceCount(self):
        if self.g.count_error:
            return getattr(self.E, self.g.count_error), 0
        if self.g.driver_version == 0:
            return self.E.cudaErrorInsufficientDriver, 0
        return (self.E.cudaSuccess, self.g.devices) if self.g.devices else (self.E.cudaErrorNoDevice, 0)

    def cudaDriverGetVersion(self):
        return self.E.cudaSuccess, self.g.driver_version

    def cudaRuntimeGetVersion(self):
        if self.g.table is not None:
            return self.E.cudaSuccess, self.g.table["runtime_version"]
        return self.g.real.cudaRuntimeGetVersion()

    def cudaGetErrorName(self, error):
        return self.E.cudaSuccess, error.name.encode()

    def cudaGetErrorString(self, error):
        return self.E.cudaSuccess, f"(simulated) {error.name}".encode()

    def cudaSetDevice(self, device):
        return (self.E.cudaSuccess if 0 <= device < self.g.devices else self.E.cudaErrorInvalidDevice,)

    def cudaDeviceGetAttribute(self, attr, device):
        a = self.g.real.cudaDeviceAttr
        val = {a.cudaDevAttrComputeCapabilityMajor: self.g.cc[0], a.cudaDevAttrComputeCapabilityMinor: self.g.cc[1]}
        return self.E.cudaSuccess, val[attr]

    # memory
    def cudaMalloc(self, size):
        err = self.g._unsafe_during_capture("cudaMalloc")
        if err:
            return err, 0
        ptr = self.g._next
        self.g.mem[ptr] = np.zeros(max(size, 1), np.uint8)
        self.g._bases.append(ptr)
        self.g._next += (max(size, 1) + 255) // 256 * 256 + 256
        return self.E.cudaSuccess, ptr

    def cudaFree(self, devPtr):  # noqa: N803
        err = self.g._unsafe_during_capture("cudaFree")
        if err:
            return (err,)
        if int(devPtr) not in self.g.mem:
            return (self.E.cudaErrorInvalidValue,)
        del self.g.mem[int(devPtr)]
        self.g._bases.remove(int(devPtr))
        return (self.E.cudaSuccess,)

    def cudaMallocHost(self, size):
        err = self.g._unsafe_during_capture("cudaMallocHost")
        if err:
            return err, 0
        buf = np.zeros(max(size, 1), np.uint8)
        self.g.pinned[buf.ctypes.data] = buf
        return self.E.cudaSuccess, buf.ctypes.data

    def cudaFreeHost(self, ptr):
        err = self.g._unsafe_during_capture("cudaFreeHost")
        if err:
            return (err,)
        return (
            (self.E.cudaSuccess,) if self.g.pinned.pop(int(ptr), None) is not None else (self.E.cudaErrorInvalidValue,)
        )

    def _host(self, ptr: int, n: int) -> np.ndarray:
        if self.g.is_device(ptr):
            raise FakeGpuMisuse(f"host side of a copy is a device address {ptr:#x}")
        return np.frombuffer((ctypes.c_uint8 * n).from_address(ptr), np.uint8)

    def _ends(self, dst: int, src: int, count: int, kind):
        K = self.g.real.cudaMemcpyKind
        sides = {
            K.cudaMemcpyHostToDevice: ("d", "h"),
            K.cudaMemcpyDeviceToHost: ("h", "d"),
            K.cudaMemcpyDeviceToDevice: ("d", "d"),
        }.get(kind)
        if sides is None:
            raise FakeGpuMisuse(f"the fake models H2D/D2H/D2D copies, not {kind}")
        view = lambda p, s: self.g.device_view(p, count) if s == "d" else self._host(p, count)  # noqa: E731
        return (lambda: view(dst, sides[0])), (lambda: view(src, sides[1]))

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        s = self.g.stream(stream)
        if s is None:
            return (self.E.cudaErrorInvalidResourceHandle,)
        d, r = self._ends(int(dst), int(src), count, kind)
        d(), r()  # validate now, as the real call does
        self.g.submit(s, Op(lambda: d().__setitem__(slice(None), r()), f"memcpy {kind.name}"))
        return (self.E.cudaSuccess,)

    def cudaMemcpy(self, dst, src, count, kind):
        err = self.g._unsafe_during_capture("cudaMemcpy")
        if err:
            return (err,)
        for s in self.g.streams.values():  # synchronous: orders after all (legacy stream)
            self.g.flush(s)
        d, r = self._ends(int(dst), int(src), count, kind)
        d()[:] = r()
        return (self.E.cudaSuccess,)

    def cudaMemsetAsync(self, devPtr, value, count, stream):  # noqa: N803
        s = self.g.stream(stream)
        if s is None:
            return (self.E.cudaErrorInvalidResourceHandle,)
        view = self.g.device_view(int(devPtr), count)
        self.g.submit(s, Op(lambda: view.fill(value & 0xFF), "memset"))
        return (self.E.cudaSuccess,)

    # streams
    def cudaStreamCreateWithFlags(self, flags):
        h = Handle("cudaStream_t")
        self.g.streams[h.value] = _Stream(h)
        return self.E.cudaSuccess, h

    def cudaStreamSynchronize(self, stream):
        s = self.g.stream(stream)
        if s is None:
            return (self.E.cudaErrorInvalidResourceHandle,)
        if s.capture is not None:
            s.capture.invalid = s.capture.invalid or "cudaStreamSynchronize"
            return (self.E.cudaErrorStreamCaptureUnsupported,)
        self.g.flush(s)
        return (self.E.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        s = self.g.stream(stream)
        if s is None:
            return (self.E.cudaErrorInvalidResourceHandle,)
        self.g.flush(s)
        del self.g.streams[int(stream)]
        return (self.E.cudaSuccess,)

    def cudaStreamIsCapturing(self, stream):
        s = self.g.stream(stream)
        if s is None:
            return self.E.cudaErrorInvalidResourceHandle, None
        st = self.g.real.cudaStreamCaptureStatus
        if s.capture is None:
            return self.E.cudaSuccess, st.cudaStreamCaptureStatusNone
        return self.E.cudaSuccess, (
            st.cudaStreamCaptureStatusInvalidated if s.capture.invalid else st.cudaStreamCaptureStatusActive
        )

    # graphs
    def cudaStreamBeginCapture(self, stream, mode):
        s = self.g.stream(stream)
        if s is None:
            return (self.E.cudaErrorInvalidResourceHandle,)
        if s.capture is not None:
            return (self.E.cudaErrorIllegalState,)
        self.g.flush(s)  # stream order: earlier work precedes the capture
        s.capture = _Capture(s)
        self.g.captures_begun += 1
        self.g.captures.append(s.capture)
        return (self.E.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        s = self.g.stream(stream)
        if s is None or s.capture is None:
            return self.E.cudaErrorIllegalState, None
        cap, s.capture = s.capture, None
        self.g.captures.remove(cap)
        if cap.invalid:
            return self.E.cudaErrorStreamCaptureInvalidated, None
        h = Handle("cudaGraph_t")
        self.g.graphs[h.value] = cap.ops
        return self.E.cudaSuccess, h

    def cudaGraphInstantiate(self, graph, flags):
        return self.cudaGraphInstantiateWithFlags(graph, flags)

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        ops = self.g.graphs.get(int(graph)) if graph is not None else None
        if ops is None:
            return self.E.cudaErrorInvalidResourceHandle, None
        h = Handle("cudaGraphExec_t")
        self.g.execs[h.value] = list(ops)
        return self.E.cudaSuccess, h

    def cudaGraphLaunch(self, graphExec, stream):  # noqa: N803
        s = self.g.stream(stream)
        ops = self.g.execs.get(int(graphExec)) if graphExec is not None else None
        if s is None or ops is None:
            return (self.E.cudaErrorInvalidResourceHandle,)
        for op in ops:
            if op.context is not None and op.context._shape_version != op.shape_version:
                raise FakeGpuMisuse(
                    f"graph replays '{op.what}' captured with input shapes that its execution "
                    f"context has since changed (now {op.context._shapes})"
                )
        self.g.launches += 1
        for op in ops:
            self.g.submit(s, op)
        return (self.E.cudaSuccess,)

    def cudaGraphExecDestroy(self, graphExec):  # noqa: N803
        return (
            (self.E.cudaSuccess,)
            if self.g.execs.pop(int(graphExec), None) is not None
            else (self.E.cudaErrorInvalidResourceHandle,)
        )

    def cudaGraphDestroy(self, graph):
        return (
            (self.E.cudaSuccess,)
            if self.g.graphs.pop(int(graph), None) is not None
            else (self.E.cudaErrorInvalidResourceHandle,)
        )

    # events
    def cudaEventCreate(self):
        h = Handle("cudaEvent_t")
        self.g.events[h.value] = h
        return self.E.cudaSuccess, h

    def cudaEventRecord(self, event, stream):
        ok = self.g.stream(stream) is not None and int(event) in self.g.events
        return (self.E.cudaSuccess if ok else self.E.cudaErrorInvalidResourceHandle,)

    def cudaEventSynchronize(self, event):
        for s in self.g.streams.values():
            self.g.flush(s)
        return (self.E.cudaSuccess,)

    def cudaEventElapsedTime(self, start, end):
        return self.E.cudaSuccess, 0.0

    def cudaEventDestroy(self, event):
        return (
            (self.E.cudaSuccess,)
            if self.g.events.pop(int(event), None) is not None
            else (self.E.cudaErrorInvalidResourceHandle,)
        )


class _ImplCuda11(_Impl):
    """cuda-python 11.x where it differs (11.8.3 and 11.8.7 seen to behave alike, without a GPU)."""

    def cudaGraphInstantiate(self, graph, pLogBuffer, bufferSize):  # noqa: N803
        err, h = self.cudaGraphInstantiateWithFlags(graph, 0)
        return err, h, None  # (err, pGraphExec, pErrorNode)

    def cudaGetDeviceCount(self):
        if self.g.driver_version == 0:  # no libcuda.so.1: cuda-python 11 raises, 12+ returns
            raise RuntimeError('Function "cuInit" not found')
        return super().cudaGetDeviceCount()

    def cudaDriverGetVersion(self):
        if self.g.driver_version == 0:
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return super().cudaDriverGetVersion()


_IMPLS = {11: _ImplCuda11}
