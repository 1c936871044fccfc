"""Run the fused modulated-conv kernel without TensorRT: NumPy in, NumPy out, through cuda-python.

Device memory and copies go through ``cuda.bindings.runtime``; the kernel library (``build.load_library``) is
called with ctypes on the legacy default stream, which both CUDA runtimes (cuda-python's and the library's
static cudart) map to the same primary-context stream. Meant for tests and debugging, not for the hot path:
every call allocates, copies and synchronises.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import numpy as np

from ..errors import BackendUnavailable, BuildError


class Availability(NamedTuple):
    """Whether the runner can execute here; falsy when not, with the reason."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 11.8.7+, 12.6+, 13
    except ImportError:
        from cuda import cudart  # cuda-python 11.8.3, 12.0-12.5

    return cudart


def available() -> Availability:
    """Availability of a CUDA device through cuda-python (never allocates device memory)."""
    try:
        cudart = _cudart()
    except ImportError as e:
        return Availability(False, f"cuda-python is not installed ({e}); pip install 'restyle-rt[trt]'")
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as e:  # noqa: BLE001  (a missing driver library raises in some cuda-python versions)
        return Availability(False, f"no CUDA driver: {e}")
    if int(err) != 0:
        return Availability(False, f"no CUDA device: cudaGetDeviceCount -> {err}")
    if count < 1:
        return Availability(False, "no CUDA device: cudaGetDeviceCount -> 0")
    return Availability(True, f"{count} CUDA device(s)")


def device_compute_capability(device: int = 0) -> tuple[int, int] | None:
    """(major, minor) of ``device``, or None without a usable CUDA device."""
    if not available():
        return None
    cudart = _cudart()
    err, major = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device)
    err2, minor = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device)
    if int(err) != 0 or int(err2) != 0:
        return None
    return int(major), int(minor)


def _check(result, what: str):
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err}")
    return result[1] if isinstance(result, tuple) and len(result) > 1 else None


class _DeviceBuffers:
    """Device allocations freed together (context manager)."""

    def __init__(self):
        self.cudart = _cudart()
        self.ptrs: list[int] = []

    def alloc(self, nbytes: int) -> int:
        ptr = int(_check(self.cudart.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))
        self.ptrs.append(ptr)
        return ptr

    def upload(self, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a)
        ptr = self.alloc(a.nbytes)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.cudart.cudaMemcpy(ptr, a.ctypes.data, a.nbytes, kind), "cudaMemcpy H2D")
        return ptr

    def download(self, ptr: int, shape, dtype) -> np.ndarray:
        out = np.empty(shape, dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.cudart.cudaMemcpy(out.ctypes.data, ptr, out.nbytes, kind), "cudaMemcpy D2H")
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.ptrs:
            self.cudart.cudaFree(p)
        self.ptrs.clear()


def make_params(x_shape, weight_shape, noise_numel: int, demodulate: bool, upsample: bool, activate: bool):
    """``modconv_params_t`` for x [B,Cin,H,W] and weight [Cout,Cin,k,k]."""
    from .build import ModconvParams

    b, cin, h, w = x_shape
    cout, cin_w, k, k2 = weight_shape
    if cin_w != cin or k != k2:
        raise ValueError(f"weight {list(weight_shape)} does not match x {list(x_shape)}")
    return ModconvParams(b, cin, cout, h, w, k, int(demodulate), int(upsample), int(activate), int(noise_numel))


def modulated_conv(
    x: np.ndarray,
    s: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    noise: np.ndarray | None,
    demodulate: bool = True,
    upsample: bool = False,
    activate: bool = True,
    lib: ctypes.CDLL | None = None,
) -> np.ndarray:
    """Run one fused layer on the GPU (math: ``reference.styled_conv``).

    Args:
        x (np.ndarray): [B, Cin, H, W] float32 or float16.
        s (np.ndarray): [B, Cin] styles.
        weight (np.ndarray): [Cout, Cin, k, k] stored weight (k = 1 or 3).
        bias (np.ndarray | None): [Cout].
        noise (np.ndarray | None): [1, 1, Hout, Wout] (or one element, broadcast).
        lib (ctypes.CDLL | None): a loaded kernel library; default ``build.load_library()``.

    Returns:
        np.ndarray: [B, Cout, Hout, Wout] in the dtype of x.

    Raises:
        BackendUnavailable: no CUDA device / cuda-python.
        BuildError: the library cannot be built, or the kernel rejected the call.
    """
    ok = available()
    if not ok:
        raise BackendUnavailable(f"modconv CUDA runner unavailable: {ok.reason}")
    if x.dtype not in (np.float32, np.float16):
        raise ValueError(f"x must be float32 or float16, got {x.dtype}")
    from .build import load_library

    lib = lib or load_library()
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    noise_numel = 0 if noise is None else int(np.asarray(noise).size)
    p = make_params(x.shape, weight.shape, noise_numel, demodulate, upsample, activate)
    if lib.modconv_check(ctypes.byref(p)) != 0:
        raise BuildError(f"modconv rejected the call: {lib.modconv_last_error().decode()}")
    hout, wout = (2 * p.height, 2 * p.width) if upsample else (p.height, p.width)
    out_shape = (p.batch, p.out_channels, hout, wout)
    with _DeviceBuffers() as bufs:
        d_x = bufs.upload(np.ascontiguousarray(x))
        d_s, d_w = bufs.upload(f32(s)), bufs.upload(f32(weight))
        d_b = bufs.upload(f32(bias)) if bias is not None else None
        d_n = bufs.upload(f32(noise)) if noise is not None else None
        d_out = bufs.alloc(int(np.prod(out_shape)) * x.dtype.itemsize)
        ws_bytes = int(lib.modconv_workspace_size(ctypes.byref(p)))
        d_ws = bufs.alloc(ws_bytes) if ws_bytes else None
        dtype = 1 if x.dtype == np.float16 else 0
        st = lib.modconv_forward(ctypes.byref(p), dtype, d_x, d_s, d_w, d_b, d_n, d_out, d_ws, ws_bytes, None)
        if st != 0:
            raise BuildError(f"modconv_forward returned {st}: {lib.modconv_last_error().decode()}")
        _check(bufs.cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
        return bufs.download(d_out, out_shape, x.dtype)
