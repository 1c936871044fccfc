"""restyle_rt.runtime.cuda on the cuda-python surface of each CUDA major (11, 12, 13), and the recorded table itself.

cuda-python 11 (Jetson JetPack 5, ``restyle-rt[trt-cu11]``) is not installed here: its fake checks calls against
``tests/fakes/cudart_signatures.json``, recorded from the real package (``tests/fakes/gen_cudart_signatures.py``).
"""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.runtime")

from fakes import gen_cudart_signatures as gen  # noqa: E402
from fakes.gpu import FakeGpu, installed_major, recorded  # noqa: E402
from fakes.surface import SurfaceError, cython_returns, doc_first_line, doc_types  # noqa: E402

from restyle_rt.runtime import cuda  # noqa: E402

pytestmark = pytest.mark.unit
MAJORS = (11, 12, 13)
ROOT = Path(__file__).resolve().parents[2]
NOTHING_LIVE = {"device": 0, "pinned": 0, "streams": 0, "graphs": 0, "graph_execs": 0, "events": 0}


@pytest.fixture
def fake(monkeypatch):
    def make(major: int, **kw):
        gpu = FakeGpu(cuda_major=major, **kw)
        rt = gpu.cudart()
        monkeypatch.setattr(cuda, "cudart", lambda: rt)
        return gpu, rt

    return make


# --- restyle_rt.runtime.cuda on every major -------------------------------------------------------------------


@pytest.mark.parametrize("major", MAJORS)
def test_graph_capture_launch_close_on_every_major(fake, major):
    """Defect 4: on CUDA 11 ``cudaGraphInstantiate(graph, 0)`` raised TypeError out of the capture (graph leaked)."""
    gpu, _ = fake(major)
    assert cuda.runtime_major() == major and cuda.device_count() == 1
    s, h, d, out = cuda.Stream(), cuda.PinnedBuffer(64), cuda.DeviceBuffer(64), cuda.PinnedBuffer(64)
    graph = cuda.CudaGraph()
    with graph.capture(s):
        d.copy_from_host(h.ptr, 64, s)
        d.copy_to_host(out.ptr, 64, s)
    assert graph.ready and gpu.live()["graphs"] == gpu.live()["graph_execs"] == 1
    for seed in (1, 2):  # replays read the host buffer as it is now
        h.view(np.float32, (16,))[:] = np.arange(16) * seed
        graph.launch(s)
        s.synchronize()
        np.testing.assert_array_equal(out.view(np.float32, (16,)), np.arange(16) * seed)
    cuda.close_all(graph, h, d, out, s)
    assert gpu.live() == NOTHING_LIVE and gpu.launches == 2


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("error", [TypeError("binding"), RuntimeError("driver")], ids=lambda e: type(e).__name__)
def test_any_instantiation_error_destroys_the_graph_and_is_a_cuda_error(fake, monkeypatch, major, error):
    gpu, rt = fake(major)
    monkeypatch.setattr(rt, "cudaGraphInstantiateWithFlags", lambda *a: (_ for _ in ()).throw(error))
    s, graph = cuda.Stream(), cuda.CudaGraph()
    with pytest.raises(cuda.CudaError, match=f"cudaGraphInstantiateWithFlags failed: {type(error).__name__}") as ei:
        with graph.capture(s):
            pass
    assert ei.value.__cause__ is error and not graph.ready
    assert gpu.live()["graphs"] == 0 and gpu.stream(s.handle).capture is None  # stream usable again
    s.synchronize()
    s.close()
    assert gpu.live() == NOTHING_LIVE


def test_an_interrupt_while_instantiating_still_destroys_the_graph(fake, monkeypatch):
    gpu, rt = fake(11)
    monkeypatch.setattr(rt, "cudaGraphInstantiateWithFlags", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    s, graph = cuda.Stream(), cuda.CudaGraph()
    with pytest.raises(KeyboardInterrupt):
        with graph.capture(s):
            pass
    s.close()
    assert gpu.live() == NOTHING_LIVE


def test_no_driver_on_cuda11_means_no_device(fake):
    """cuda-python 11 raises RuntimeError (no libcuda.so.1) where 12+ return cudaErrorInsufficientDriver."""
    _, rt = fake(11, driver_version=0)
    with pytest.raises(RuntimeError, match="cuInit"):
        rt.cudaGetDeviceCount()
    st = cuda.probe()
    assert st.no_device and st.driver_version == 0 and st.runtime_version == 11080
    assert cuda.device_count() == 0


@pytest.mark.parametrize("major", MAJORS)
def test_trt_backend_captures_its_loop_on_every_major(monkeypatch, make_toy, major):
    """The backend replays graphs (no eager fallback) on cuda-python 11 too."""
    pytest.importorskip("tensorrt_rtx_bindings")
    pytest.importorskip("onnxruntime")
    from fakes.backend import fake_backend_env

    from restyle_rt.runtime.backends import trt as trt_backend

    e = fake_backend_env(monkeypatch, make_toy, generation="10.3", cuda_major=major)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, *e.art.spec.input_hw)).astype(np.float32)
    with trt_backend.TrtBackend(e.art, cuda_graph=True) as be:
        for _ in range(2):
            res = be.run_loop(x, 2)
        assert be.use_graphs and sorted(be._graphs) == [(2, 2)] and e.gpu.launches == 2
    lats, imgs = e.ref.loop(x, 2)
    np.testing.assert_allclose(res.latents, lats[-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.images, imgs[-1], rtol=1e-5, atol=1e-5)
    assert e.gpu.live() == NOTHING_LIVE


# --- the fakes know each major's rules --------------------------------------------------------------------------


def test_cuda11_fake_refuses_the_cuda12_instantiate_call(fake):
    gpu, rt = fake(11)
    s = cuda.Stream()
    check = cuda.check
    check(rt.cudaStreamBeginCapture(s.raw, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    graph = check(rt.cudaStreamEndCapture(s.raw))
    assert issubclass(SurfaceError, TypeError)
    with pytest.raises(SurfaceError, match="missing a required argument: 'bufferSize'"):
        rt.cudaGraphInstantiate(graph, 0)
    with pytest.raises(SurfaceError, match="size_t"):
        rt.cudaGraphInstantiate(graph, b"", 0.5)
    err, exec_, error_node = rt.cudaGraphInstantiate(graph, b"", 0)  # three values, as cuda-python 11
    assert err == rt.cudaError_t.cudaSuccess and error_node is None
    check(rt.cudaGraphExecDestroy(exec_))
    err, exec_ = rt.cudaGraphInstantiateWithFlags(graph, 0)
    cuda.close_all(s)
    check(rt.cudaGraphExecDestroy(exec_))
    check(rt.cudaGraphDestroy(graph))
    assert gpu.live() == NOTHING_LIVE


@pytest.mark.parametrize("major", (12, 13))
def test_cuda12_and_13_fakes_take_instantiate_flags(fake, major):
    gpu, rt = fake(major)
    s = cuda.Stream()
    cuda.check(rt.cudaStreamBeginCapture(s.raw, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    graph = cuda.check(rt.cudaStreamEndCapture(s.raw))
    with pytest.raises(SurfaceError, match="too many positional arguments"):
        rt.cudaGraphInstantiate(graph, b"", 0)
    err, exec_ = rt.cudaGraphInstantiate(graph, 0)
    cuda.check(rt.cudaGraphExecDestroy(exec_))
    cuda.close_all(s)
    cuda.check(rt.cudaGraphDestroy(graph))
    assert gpu.live() == NOTHING_LIVE


def test_a_function_a_major_lacks_is_absent_from_its_fake():
    gpu = FakeGpu(cuda_major=11)
    gpu.table = copy.deepcopy(gpu.table)
    gpu.table["functions"]["cudaStreamIsCapturing"] = None  # as if cuda-python 11 lacked it
    rt = gpu.cudart()
    assert not hasattr(rt, "cudaStreamIsCapturing")
    with pytest.raises(AttributeError, match="has no attribute 'cudaStreamIsCapturing'"):
        rt.cudaStreamIsCapturing  # noqa: B018
    del gpu.table["functions"]["cudaStreamIsCapturing"]  # not recorded at all: the fake refuses
    with pytest.raises(AssertionError, match="does not record for CUDA 11"):
        gpu.cudart()


def test_enum_members_a_major_lacks_are_absent():
    real = FakeGpu().real
    rt = FakeGpu(cuda_major=11).cudart()
    newer = sorted(set(real.cudaError_t.__members__) - set(recorded(11)["enums"]["cudaError_t"]))
    assert newer, "cuda-python 13 has error codes 11 lacks"
    with pytest.raises(AttributeError, match=f"no member '{newer[0]}'"):
        getattr(rt.cudaError_t, newer[0])
    assert rt.cudaError_t.cudaSuccess is real.cudaError_t.cudaSuccess
    assert rt.cudaStreamNonBlocking == 1


# --- the table ------------------------------------------------------------------------------------------------


def test_table_matches_the_installed_cuda_bindings():
    """The installed major's recorded entries are what the installed module says (so the table cannot rot)."""
    real = FakeGpu().real
    major = installed_major(real)
    entry = recorded(major)
    assert entry["runtime_version"] // 1000 == major
    for name, rec in entry["functions"].items():
        fn = getattr(real, name, None)
        if rec is None:
            assert fn is None, f"{name}: recorded as absent, the installed module has it"
            continue
        assert fn is not None, f"{name}: recorded, the installed module lacks it"
        first = doc_first_line(fn)
        assert (rec["params"], rec["doc_first_line"], rec["types"], rec["returns"]) == (
            list(inspect.signature(fn).parameters),
            first,
            doc_types(first),
            cython_returns(fn),
        ), name
    for name, members in entry["enums"].items():
        assert set(members) <= set(getattr(real, name).__members__), name
    assert entry["constants"] == {c: int(getattr(real, c)) for c in entry["constants"]}


@pytest.mark.parametrize("major", MAJORS)
def test_table_covers_every_cudart_call(major):
    """Every cudart function restyle_rt calls or the fake implements is recorded for each major (else: regenerate)."""
    assert set(gen.names()) <= set(recorded(major)["functions"])


def test_restyle_rt_calls_only_functions_with_one_signature_on_every_major():
    """cudaGraphInstantiate differs (11: ``(graph, pLogBuffer, bufferSize)``, 3 values); restyle_rt's calls must not."""
    called = set()
    for path in [ROOT / "restyle_rt/runtime/cuda.py", *sorted((ROOT / "restyle_rt/kernels").glob("*.py"))]:
        called |= set(re.findall(r"\.(cuda[A-Z]\w*)\(", path.read_text()))
    assert "cudaGraphInstantiateWithFlags" in called
    for name in sorted(called):
        entries = [recorded(m)["functions"][name] for m in MAJORS]
        assert all(e is not None for e in entries), f"{name} is missing on some CUDA major"
        sigs = {m: (e["params"], e["types"], len(e["returns"])) for m, e in zip(MAJORS, entries)}
        assert len(set(map(repr, sigs.values()))) == 1, f"{name} differs across CUDA majors: {sigs}"
    inst = {m: recorded(m)["functions"]["cudaGraphInstantiateWithFlags"] for m in MAJORS}
    assert all(
        e["doc_first_line"] == "cudaGraphInstantiateWithFlags(graph, unsigned long long flags)"
        and e["returns"] == ["cudaError_t", "pGraphExec: cudaGraphExec_t"]
        for e in inst.values()
    )
