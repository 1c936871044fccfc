"""Small cuda-python helpers: checked calls, device/pinned buffers, one stream, events, CUDA-graph capture/replay.

Uses the CUDA runtime API of ``cuda-python`` (``cuda.bindings.runtime``; ``cuda.cudart`` on older releases), never
torch. Every call goes through :func:`check`, which raises :class:`CudaError` naming the call and the CUDA error.
Buffers are allocated once by their owner and freed by ``close()`` (idempotent). Pointers are plain ints.
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from ..errors import BackendUnavailable, RestyleError


class CudaError(RestyleError):
    """A CUDA runtime call failed."""


def cudart():
    """The cuda-python runtime module; raises BackendUnavailable when cuda-python is missing."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError:
            raise BackendUnavailable("cuda-python is not installed: `pip install restyle-rt[trt]`") from None
    return runtime


def check(result, what: str = "CUDA call"):
    """Unpack a cuda-python ``(err, *values)`` result; raise CudaError unless ``err`` is cudaSuccess."""
    rt = cudart()
    err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(err)[1]
        text = rt.cudaGetErrorString(err)[1]
        raise CudaError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}: "
                        f"{text.decode() if isinstance(text, bytes) else text}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def device_count() -> int:
    """Number of visible CUDA devices; 0 when there is no driver, no device or no cuda-python."""
    try:
        rt = cudart()
        err, n = rt.cudaGetDeviceCount()
    except Exception:  # noqa: BLE001 - any failure here means "no usable device"
        return 0
    return int(n) if err == rt.cudaError_t.cudaSuccess else 0


def compute_capability(device: int = 0) -> Tuple[int, int]:
    """(major, minor) of ``device``."""
    rt = cudart()
    a = rt.cudaDeviceAttr
    major = check(rt.cudaDeviceGetAttribute(a.cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute")
    minor = check(rt.cudaDeviceGetAttribute(a.cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute")
    return int(major), int(minor)


def set_device(device: int = 0) -> None:
    check(cudart().cudaSetDevice(device), f"cudaSetDevice({device})")


def _int(handle) -> int:
    return int(handle) if not hasattr(handle, "getPtr") else int(handle.getPtr())


class Stream:
    """One non-blocking CUDA stream. ``handle`` is what TensorRT's ``execute_async_v3`` takes."""

    def __init__(self):
        rt = cudart()
        self._s = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def raw(self):
        return self._s

    @property
    def handle(self) -> int:
        return _int(self._s)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self._s), "cudaStreamSynchronize")

    def close(self) -> None:
        if self._s is not None:
            check(cudart().cudaStreamDestroy(self._s), "cudaStreamDestroy")
            self._s = None


class DeviceBuffer:
    """``nbytes`` of device memory from ``cudaMalloc`` (256-byte aligned, as TensorRT requires)."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes})"))

    def copy_from_host(self, src_ptr: int, nbytes: int, stream: Stream, offset: int = 0) -> None:
        _memcpy(self.ptr + offset, src_ptr, nbytes, "cudaMemcpyHostToDevice", stream, self.nbytes - offset)

    def copy_to_host(self, dst_ptr: int, nbytes: int, stream: Stream, offset: int = 0) -> None:
        _memcpy(dst_ptr, self.ptr + offset, nbytes, "cudaMemcpyDeviceToHost", stream, self.nbytes - offset)

    def copy_from_device(self, src_ptr: int, nbytes: int, stream: Stream, offset: int = 0) -> None:
        _memcpy(self.ptr + offset, src_ptr, nbytes, "cudaMemcpyDeviceToDevice", stream, self.nbytes - offset)

    def zero(self, stream: Stream) -> None:
        check(cudart().cudaMemsetAsync(self.ptr, 0, self.nbytes, stream.raw), "cudaMemsetAsync")

    def close(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


def _memcpy(dst: int, src: int, nbytes: int, kind: str, stream: Stream, room: int) -> None:
    if nbytes > room:
        raise CudaError(f"copy of {nbytes} bytes overruns a {room}-byte buffer")
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst, src, nbytes, getattr(rt.cudaMemcpyKind, kind), stream.raw), kind)


class PinnedBuffer:
    """Page-locked host memory (``cudaMallocHost``) for async copies, viewed as numpy arrays."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMallocHost(max(self.nbytes, 1)), f"cudaMallocHost({self.nbytes})"))

    def view(self, dtype, shape: Sequence[int]) -> np.ndarray:
        """A numpy array over the first ``prod(shape)`` elements (valid until :meth:`close`)."""
        count = int(np.prod(shape))
        need = count * np.dtype(dtype).itemsize
        if need > self.nbytes:
            raise CudaError(f"view of {need} bytes exceeds a {self.nbytes}-byte pinned buffer")
        raw = (ctypes.c_uint8 * need).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class Event:
    """A CUDA event for stream-ordered timing (:meth:`elapsed_ms`)."""

    def __init__(self):
        self._e = check(cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(cudart().cudaEventRecord(self._e, stream.raw), "cudaEventRecord")

    def elapsed_ms(self, start: "Event") -> float:
        check(cudart().cudaEventSynchronize(self._e), "cudaEventSynchronize")
        return float(check(cudart().cudaEventElapsedTime(start._e, self._e), "cudaEventElapsedTime"))

    def close(self) -> None:
        if self._e is not None:
            check(cudart().cudaEventDestroy(self._e), "cudaEventDestroy")
            self._e = None


class CudaGraph:
    """Work captured from one stream (``with graph.capture(stream): ...``), then replayed with :meth:`launch`.

    Kernel arguments and pointers are frozen at capture: change inputs by copying into the same buffers.
    """

    def __init__(self):
        self._graph = None
        self._exec = None

    @contextlib.contextmanager
    def capture(self, stream: Stream) -> Iterator["CudaGraph"]:
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            yield self
        finally:  # always end the capture, or the stream stays unusable
            graph = check(rt.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        self._graph = graph
        self._exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    @property
    def ready(self) -> bool:
        return self._exec is not None

    def launch(self, stream: Stream) -> None:
        check(cudart().cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def close(self) -> None:
        rt = cudart()
        if self._exec is not None:
            check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
        if self._graph is not None:
            check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._graph = None


def close_all(*things: Optional[object]) -> None:
    """close() each non-None object, in order."""
    for t in things:
        if t is not None:
            t.close()
