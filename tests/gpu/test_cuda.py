"""cuda-python helpers on a real device: buffers, stream ordering, CUDA-graph capture and replay of real kernels."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from restyle_rt.runtime import cuda

pytestmark = pytest.mark.gpu

ADD_ONE = b"""
extern "C" __global__ void add_one(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1.0f;
}
"""


@pytest.fixture(scope="module")
def add_one(device):
    """A tiny NVRTC-compiled kernel: ``launch(ptr, n, stream)`` adds 1 to n floats."""
    from _device import nvrtc_or_skip
    from cuda.bindings import driver

    nvrtc = nvrtc_or_skip()

    def ok(res):
        err, *rest = res
        assert int(err) == 0, f"{err}"
        return rest[0] if len(rest) == 1 else rest

    prog = ok(nvrtc.nvrtcCreateProgram(ADD_ONE, b"add_one.cu", 0, [], []))
    major, minor = device
    opts = [f"--gpu-architecture=compute_{major}{minor}".encode()]
    err = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
    if int(err) != 0:
        size = ok(nvrtc.nvrtcGetProgramLogSize(prog))
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        pytest.fail(log.decode())
    ptx = b" " * ok(nvrtc.nvrtcGetPTXSize(prog))
    ok(nvrtc.nvrtcGetPTX(prog, ptx))
    cuda.check(cuda.cudart().cudaFree(0), "cudaFree(0)")  # make the primary context current
    module = ok(driver.cuModuleLoadData(ptx))
    fn = ok(driver.cuModuleGetFunction(module, b"add_one"))

    def launch(ptr: int, n: int, stream: cuda.Stream):
        args = ((ptr, n), (ctypes.c_void_p, ctypes.c_int))
        ok(driver.cuLaunchKernel(fn, (n + 255) // 256, 1, 1, 256, 1, 1, 0, stream.handle, args, 0))

    yield launch
    driver.cuModuleUnload(module)


@pytest.fixture
def stream(device):
    s = cuda.Stream()
    yield s
    s.close()


def test_compute_capability(device):
    assert device >= (5, 0)


def test_roundtrip_through_device(stream):
    n = 1 << 16
    host, back = cuda.PinnedBuffer(4 * n), cuda.PinnedBuffer(4 * n)
    a, b = cuda.DeviceBuffer(4 * n), cuda.DeviceBuffer(4 * n)
    try:
        src = host.view(np.float32, (n,))
        src[:] = np.arange(n, dtype=np.float32)
        a.copy_from_host(host.ptr, 4 * n, stream)
        b.copy_from_device(a.ptr, 4 * n, stream)
        b.copy_to_host(back.ptr, 4 * n, stream)
        stream.synchronize()
        np.testing.assert_array_equal(back.view(np.float32, (n,)), src)
    finally:
        cuda.close_all(host, back, a, b)


def test_overrun_is_refused(stream):
    buf = cuda.DeviceBuffer(16)
    try:
        with pytest.raises(cuda.CudaError, match="overruns"):
            buf.copy_from_device(buf.ptr, 32, stream)
    finally:
        buf.close()


def test_stream_orders_kernels_and_copies(stream, add_one):
    n = 4096
    host = cuda.PinnedBuffer(4 * n)
    a, b = cuda.DeviceBuffer(4 * n), cuda.DeviceBuffer(4 * n)
    try:
        host.view(np.float32, (n,))[:] = 0
        a.copy_from_host(host.ptr, 4 * n, stream)
        for _ in range(10):  # a += 1; b = a; b += 1; a = b  -> +2 per round, in order
            add_one(a.ptr, n, stream)
            b.copy_from_device(a.ptr, 4 * n, stream)
            add_one(b.ptr, n, stream)
            a.copy_from_device(b.ptr, 4 * n, stream)
        a.copy_to_host(host.ptr, 4 * n, stream)
        stream.synchronize()
        np.testing.assert_array_equal(host.view(np.float32, (n,)), 20.0)
    finally:
        cuda.close_all(host, a, b)


def test_graph_capture_and_replay(stream, add_one):
    """Capture copy -> kernel -> kernel -> copy-out; replay after changing the input in place (pointers frozen)."""
    n = 1000
    stage, out = cuda.PinnedBuffer(4 * n), cuda.PinnedBuffer(4 * n)
    src, work = cuda.DeviceBuffer(4 * n), cuda.DeviceBuffer(4 * n)
    graph = cuda.CudaGraph()
    try:
        with graph.capture(stream):
            work.copy_from_device(src.ptr, 4 * n, stream)
            add_one(work.ptr, n, stream)
            add_one(work.ptr, n, stream)
            work.copy_to_host(out.ptr, 4 * n, stream)
        assert graph.ready
        for k in range(3):
            stage.view(np.float32, (n,))[:] = np.arange(n, dtype=np.float32) * k
            src.copy_from_host(stage.ptr, 4 * n, stream)  # new contents, same address
            graph.launch(stream)
            stream.synchronize()
            np.testing.assert_array_equal(out.view(np.float32, (n,)), np.arange(n, dtype=np.float32) * k + 2)
    finally:
        cuda.close_all(graph, stage, out, src, work)


def test_events_time_the_stream(stream, add_one):
    buf = cuda.DeviceBuffer(4 << 20)
    start, end = cuda.Event(), cuda.Event()
    try:
        start.record(stream)
        add_one(buf.ptr, 1 << 20, stream)
        end.record(stream)
        assert end.elapsed_ms(start) >= 0.0
    finally:
        cuda.close_all(start, end, buf)
