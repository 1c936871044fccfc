"""restyle_rt.runtime.cuda on the fake device, the fakes' own fidelity, driver errors and layering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.runtime")
pytest.importorskip("tensorrt_rtx_bindings")

from fakes.gpu import FakeGpu, FakeGpuMisuse  # noqa: E402
from fakes.surface import SurfaceError, mirror_class  # noqa: E402
from fakes.tensorrt import GENERATIONS, make_trt  # noqa: E402

from restyle_rt.runtime import cuda  # noqa: E402
from restyle_rt.runtime.trt_compat import TrtInfo  # noqa: E402

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake(monkeypatch):
    def make(**kw):
        gpu = FakeGpu(**kw)
        rt = gpu.cudart()
        monkeypatch.setattr(cuda, "cudart", lambda: rt)
        return gpu, rt

    return make


# --- defect 1: handles --------------------------------------------------------------------------------------


def test_stream_handle_is_the_handle_value_not_the_wrapper_address(fake):
    gpu, rt = fake()
    s = cuda.Stream()
    assert s.handle == int(s.raw) != s.raw.getPtr()
    assert gpu.stream(s.handle) is not None  # what execute_async_v3 / is_stream_capturable receive
    assert rt.cudaStreamSynchronize(s.raw.getPtr())[0] == rt.cudaError_t.cudaErrorInvalidResourceHandle
    s.close()


def test_async_copies_land_at_synchronize(fake):
    gpu, _ = fake()
    s, h, d, out = cuda.Stream(), cuda.PinnedBuffer(64), cuda.DeviceBuffer(64), cuda.PinnedBuffer(64)
    h.view(np.float32, (16,))[:] = np.arange(16)
    d.copy_from_host(h.ptr, 64, s)
    d.copy_to_host(out.ptr, 64, s)
    assert not out.view(np.float32, (16,)).any()  # not yet: the stream has not run
    s.synchronize()
    np.testing.assert_array_equal(out.view(np.float32, (16,)), np.arange(16))
    with pytest.raises(FakeGpuMisuse, match="not inside a live cudaMalloc"):
        d.copy_from_host(h.ptr, 64, s, offset=32 - 64)  # before the allocation
    cuda.close_all(h, d, out, s)
    assert not any(gpu.live().values())


# --- defect 2: driver ---------------------------------------------------------------------------------------


def test_insufficient_driver_is_an_error_not_zero_devices(fake):
    fake(driver_version=12080, count_error="cudaErrorInsufficientDriver")
    with pytest.raises(cuda.CudaDriverError, match="cudaErrorInsufficientDriver.*CUDA 12.8.*CUDA 13.*<13"):
        cuda.device_count()


@pytest.mark.parametrize("kw", [{"driver_version": 0}, {"devices": 0}], ids=["no-driver", "no-device"])
def test_no_driver_or_no_device_is_zero(fake, kw):
    fake(**kw)
    assert cuda.device_count() == 0


def _outcome(fn):
    """("fail" | "skip" | "ok", message) of a function that may call pytest.fail / pytest.skip."""
    try:
        fn()
    except pytest.fail.Exception as e:
        return "fail", str(e)
    except pytest.skip.Exception as e:
        return "skip", str(e)
    return "ok", ""


def test_gpu_tests_fail_on_a_broken_driver_and_skip_without_one(fake, monkeypatch):
    from gpu import _device

    fake(driver_version=12080, count_error="cudaErrorInsufficientDriver")
    kind, msg = _outcome(_device.usable_device)
    assert kind == "fail" and "installed but unusable" in msg, (kind, msg)
    fake(driver_version=0)
    assert _outcome(_device.usable_device)[0] == "skip"
    fake(devices=0)
    assert _outcome(_device.usable_device)[0] == "skip"
    monkeypatch.setattr(cuda, "cudart", lambda: (_ for _ in ()).throw(cuda.BackendUnavailable("no cuda-python")))
    monkeypatch.setattr(_device, "driver_installed", lambda: True)
    kind, msg = _outcome(_device.usable_device)
    assert kind == "fail" and "driver is installed but no cuda-python" in msg, (kind, msg)


def test_trt_backend_unavailable_names_driver_and_cuda_major(fake, monkeypatch):
    from restyle_rt.runtime.backends import trt as trt_backend

    gpu, _ = fake(driver_version=12080, count_error="cudaErrorInsufficientDriver")
    info = TrtInfo("tensorrt-rtx", "1.7.1.116", make_trt("rtx", gpu))
    monkeypatch.setattr(trt_backend, "try_load_trt", lambda *a: info)
    ok, why = trt_backend.TrtBackend.available()
    assert not ok and "cudaErrorInsufficientDriver" in why
    fake()
    monkeypatch.setattr(cuda, "runtime_major", lambda: 12)  # cuda-python 12 with the cu13 RTX wheel
    ok, why = trt_backend.TrtBackend.available()
    assert not ok and "built for CUDA 13" in why and "'cuda-python>=13,<14'" in why


def test_extras_pin_cuda_python_to_one_cuda_major():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {
        name: [r for r in reqs if r.replace(" ", "").startswith("cuda-python")]
        for name, reqs in extras.items()
        if name.startswith("trt")
    }
    assert pins, "no trt extras"
    for name, reqs in pins.items():
        assert len(reqs) == 1, f"{name}: {reqs}"
        spec = reqs[0].replace(" ", "")
        lo, hi = int(spec.split(">=")[1].split(",")[0].split(".")[0]), int(spec.split("<")[1])
        assert hi == lo + 1, f"extra {name} pins {spec}: not one CUDA major"


# --- defect 12: NVRTC ---------------------------------------------------------------------------------------


def test_nvrtc_fixture_skips_when_the_library_is_absent():
    from gpu import _device

    try:
        from cuda.bindings import nvrtc

        nvrtc.nvrtcVersion()
    except RuntimeError:
        with pytest.raises(pytest.skip.Exception, match="cuda-toolkit\\[nvrtc\\]"):
            _device.nvrtc_or_skip()
    else:
        assert _device.nvrtc_or_skip() is nvrtc


# --- the fakes themselves ------------------------------------------------------------------------------------


def test_fakes_refuse_what_the_real_apis_refuse():
    gpu = FakeGpu()
    rt = gpu.cudart()
    with pytest.raises(SurfaceError, match="size_t"):
        rt.cudaMalloc(1.5)
    with pytest.raises(SurfaceError, match="missing a required argument: 'stream'"):
        rt.cudaMemcpyAsync(0, 0, 4, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
    with pytest.raises(SurfaceError, match="cudaMemcpyKind"):
        rt.cudaMemcpyAsync(0, 0, 4, 1, 0)
    with pytest.raises(AttributeError, match="fake cudart does not implement cudaMallocAsync"):
        rt.cudaMallocAsync  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'cudaStream_t'|does not implement cudaStream_t"):
        rt.cudaStream_t(0x1234)  # handles come only from the creating calls
    trt = make_trt("rtx", gpu)
    ctx_cls = trt.IExecutionContext
    with pytest.raises(SurfaceError, match="no overload accepts"):
        ctx_cls.set_tensor_address(object.__new__(ctx_cls), "latent")  # arity
    with pytest.raises(SurfaceError, match="no overload accepts"):
        ctx_cls.execute_async_v3(object.__new__(ctx_cls), 1.0)  # type
    with pytest.raises(AssertionError, match="real IExecutionContext has no such member"):
        mirror_class(
            "IExecutionContext",
            {"enqueue_v4": lambda self: None},
            __import__("tensorrt_rtx_bindings").IExecutionContext,
            trt,
        )


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_generations_hide_what_they_lack(generation):
    trt = make_trt(generation, FakeGpu())
    info = TrtInfo(GENERATIONS[generation].flavour, GENERATIONS[generation].version, trt)
    has = lambda cls, name: hasattr(getattr(trt, cls), name)  # noqa: E731
    expect = {
        "8.5": dict(runtime_config=False, user_managed_memory=False, capturable=False, v2=False, wodm=True),
        "10.3": dict(runtime_config=False, user_managed_memory=True, capturable=False, v2=True, wodm=True),
        "11.1": dict(runtime_config=True, user_managed_memory=True, capturable=False, v2=True, wodm=False),
        "rtx": dict(runtime_config=True, user_managed_memory=True, capturable=True, v2=True, wodm=False),
    }[generation]
    assert info.runtime_config == expect["runtime_config"]
    assert info.user_managed_memory == expect["user_managed_memory"]
    assert info.stream_capturable_query == expect["capturable"]
    assert has("IExecutionContext", "set_device_memory") == expect["v2"]
    assert has("ICudaEngine", "get_device_memory_size_for_profile_v2") == expect["v2"]
    assert has("ICudaEngine", "create_execution_context_without_device_memory") == expect["wodm"]
    assert has("IExecutionContext", "execute_async_v3") and has("IExecutionContext", "set_input_shape")
    assert info.kernel_specialization == (generation == "rtx") and info.engine_validity == (generation == "rtx")


# --- layering -----------------------------------------------------------------------------------------------


def test_runtime_does_not_import_the_build_time_engine_package():
    code = (
        "import sys; import restyle_rt.runtime.backends.trt, restyle_rt.runtime.api; "
        "bad = sorted(m for m in sys.modules if m.startswith(('restyle_rt.engine', 'restyle_rt.export'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
