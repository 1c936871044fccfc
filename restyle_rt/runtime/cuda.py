"""Small cuda-python helpers: checked calls, device/pinned buffers, one stream, events, CUDA-graph capture/replay.

Uses the CUDA runtime API of ``cuda-python`` (``cuda.bindings.runtime``; ``cuda.cudart`` on older releases), never
torch. Every call goes through :func:`check`, which raises :class:`CudaError` naming the call and the CUDA error.
Only calls whose Python signature is the same in cuda-python 11.8, 12.x and 13.x are used
(``tests/fakes/cudart_signatures.json``): e.g. ``cudaGraphInstantiateWithFlags``, not ``cudaGraphInstantiate``.
Buffers are allocated once by their owner and freed by ``close()`` (idempotent). Pointers are plain ints.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EXIT_BACKEND, BackendUnavailable, RestyleError

log = logging.getLogger("restyle_rt")


class CudaError(RestyleError):
    """A CUDA runtime call failed (the CLI exits with :data:`~restyle_rt.errors.EXIT_BACKEND`)."""

    exit_status = EXIT_BACKEND


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
        raise CudaError(
            f"{what} failed: {name.decode() if isinstance(name, bytes) else name}: "
            f"{text.decode() if isinstance(text, bytes) else text}"
        )
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


class CudaDriverError(CudaError):
    """An NVIDIA driver is installed but cannot serve this cuda-python (too old for its CUDA major, mismatched)."""


# cudaGetDeviceCount errors that mean "nothing to run on" rather than "something is broken"
_NO_DEVICE = ("cudaErrorNoDevice",)


@dataclass(frozen=True)
class DeviceStatus:
    """What the CUDA runtime reports about this machine.

    Attributes:
        count: visible devices (0 when ``error`` is set).
        driver_version: ``cudaDriverGetVersion`` (e.g. 12080); 0 when no NVIDIA driver is installed.
        runtime_version: the CUDA runtime cuda-python links (e.g. 13040).
        error: the CUDA error name of ``cudaGetDeviceCount``, or ``""``.
    """

    count: int
    driver_version: int
    runtime_version: int
    error: str = ""

    @property
    def no_device(self) -> bool:
        """True when there is truly nothing to run on: no driver installed, or the driver sees no device."""
        return self.count == 0 and (self.driver_version == 0 or self.error in _NO_DEVICE or not self.error)


def _ver(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def probe() -> DeviceStatus:
    """Ask the CUDA runtime for devices, driver and runtime versions, without raising on a CUDA error.

    Raises:
        BackendUnavailable: cuda-python is not installed.
    """
    rt = cudart()
    rtv = rt.cudaRuntimeGetVersion()
    try:
        err, n = rt.cudaGetDeviceCount()
        drv = rt.cudaDriverGetVersion()
    except RuntimeError as e:  # cuda-python 11 raises when libcuda.so.1 cannot be loaded (12+ return errors)
        log.debug("cuda-python found no NVIDIA driver: %s", e)
        err, n, drv = rt.cudaError_t.cudaErrorInsufficientDriver, 0, (rt.cudaError_t.cudaErrorInsufficientDriver, 0)
    driver = int(drv[1]) if drv[0] == rt.cudaError_t.cudaSuccess else 0
    runtime = int(rtv[1]) if rtv[0] == rt.cudaError_t.cudaSuccess else 0
    if err == rt.cudaError_t.cudaSuccess:
        return DeviceStatus(int(n), driver, runtime)
    name = rt.cudaGetErrorName(err)[1]
    return DeviceStatus(0, driver, runtime, name.decode() if isinstance(name, bytes) else str(name))


def device_count() -> int:
    """Number of visible CUDA devices; 0 when no NVIDIA driver is installed, it reports no device, or cuda-python
    is not installed (:func:`cudart` says why).

    Raises:
        CudaDriverError: a driver is installed but unusable, e.g. ``cudaErrorInsufficientDriver``: cuda-python 13
            needs a CUDA 13 driver (>= 580). The message names both versions and the fix.
    """
    try:
        st = probe()
    except BackendUnavailable:
        return 0
    if st.count or st.no_device:
        return st.count
    raise CudaDriverError(
        f"cudaGetDeviceCount failed: {st.error}: the NVIDIA driver supports CUDA {_ver(st.driver_version)}, this "
        f"cuda-python links CUDA {_ver(st.runtime_version)}. Update the driver (CUDA 13 needs >= 580), or install "
        f"the cuda-python of the driver's CUDA major together with the TensorRT built for it, e.g. "
        f"`pip install 'cuda-python>={st.driver_version // 1000},<{st.driver_version // 1000 + 1}'`"
    )


def runtime_major() -> int:
    """CUDA major version of the runtime cuda-python links (``cudaRuntimeGetVersion() // 1000``)."""
    return int(check(cudart().cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")) // 1000


def compute_capability(device: int = 0) -> tuple[int, int]:
    """(major, minor) of ``device``."""
    rt = cudart()
    a = rt.cudaDeviceAttr
    major = check(rt.cudaDeviceGetAttribute(a.cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute")
    minor = check(rt.cudaDeviceGetAttribute(a.cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute")
    return int(major), int(minor)


def set_device(device: int = 0) -> None:
    check(cudart().cudaSetDevice(device), f"cudaSetDevice({device})")


def _int(handle) -> int:
    """The value of a cuda-python handle (``int(cudaStream_t)``), never ``getPtr()``: that is the address of the
    Python wrapper's storage on the host, not the handle TensorRT and CUDA expect."""
    return int(handle)


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

    def elapsed_ms(self, start: Event) -> float:
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
    def capture(self, stream: Stream) -> Iterator[CudaGraph]:
        """Capture the work the block enqueues on ``stream``; the graph is instantiated when the block exits.

        On failure (an error in the block, or a capture CUDA invalidated) the capture is always ended, so the
        stream is usable again, the partial graph is destroyed and the *first* error is raised: an error from
        the block is never masked by ``cudaStreamEndCapture`` reporting the invalidated capture.

        Raises:
            CudaError: capture could not begin, was invalidated, or the graph could not be instantiated (any
                exception of the instantiation is raised as a CudaError, after the graph is destroyed).
        """
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            yield self
        except BaseException:
            err, *graph = rt.cudaStreamEndCapture(stream.raw)
            _destroy_graph(rt, graph[0] if graph else None)
            if err != rt.cudaError_t.cudaSuccess:
                log.debug("cudaStreamEndCapture after a failed capture: %s", err)
            raise
        graph = check(rt.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        try:
            # not cudaGraphInstantiate: (graph, flags) on CUDA 12+, (graph, logBuffer, bufferSize) on CUDA 11
            self._exec = check(rt.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiateWithFlags")
        except BaseException as e:
            _destroy_graph(rt, graph)
            if isinstance(e, Exception) and not isinstance(e, CudaError):
                raise CudaError(f"cudaGraphInstantiateWithFlags failed: {type(e).__name__}: {e}") from e
            raise
        self._graph = graph

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


def _destroy_graph(rt, graph) -> None:
    """Destroy the graph of a failed capture (if any); a failure is logged: the earlier error is what is raised."""
    if graph is None or not int(graph):
        return
    try:
        check(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
    except CudaError as e:
        log.debug("%s (after an earlier error)", e)


def close_all(*things: object | None) -> None:
    """close() each non-None object, in order."""
    for t in things:
        if t is not None:
            t.close()
