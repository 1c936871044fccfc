"""TrtBackend on fakes generated from the real cuda-bindings / TensorRT-RTX surfaces, for every API generation.

The fakes (``tests/fakes``) refuse calls the real APIs would refuse, keep handles opaque, run streams
asynchronously, refuse synchronisation and allocation inside a capture, and run each "engine" with ONNX Runtime on
the toy graphs, so the loop's numbers are compared with the NumPy restatement of the toy model. What they cannot
show: TensorRT's kernels, real timing, driver behaviour beyond what is modelled (see tests/fakes/gpu.py).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.runtime")
pytest.importorskip("tensorrt_rtx_bindings")
pytest.importorskip("onnxruntime")

from fakes.backend import fake_backend_env  # noqa: E402
from fakes.gpu import FakeGpuMisuse  # noqa: E402
from fakes.tensorrt import GENERATIONS  # noqa: E402

from restyle_rt.errors import ArtifactError, InputError  # noqa: E402
from restyle_rt.runtime import cuda  # noqa: E402
from restyle_rt.runtime.backends import trt as trt_backend  # noqa: E402

pytestmark = pytest.mark.unit
TOL = dict(rtol=1e-5, atol=1e-5)
NOTHING_LIVE = {"device": 0, "pinned": 0, "streams": 0, "graphs": 0, "graph_execs": 0, "events": 0}


@pytest.fixture
def env(monkeypatch, make_toy):
    return lambda **kw: fake_backend_env(monkeypatch, make_toy, **kw)


def _images(art, b, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (b, 3, *art.spec.input_hw)).astype(np.float32)


def _check(res, ref, x, n):
    lats, imgs = ref.loop(x, n)
    np.testing.assert_allclose(res.latents, lats[-1], **TOL)
    np.testing.assert_allclose(res.images, imgs[-1], **TOL)
    assert list(res.steps_used) == [n] * len(x)


@pytest.mark.parametrize("use_graph", [True, False], ids=["graph", "eager"])
@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_loop_matches_reference_on_every_generation(env, generation, use_graph):
    """Defects 1 (stream handle), 4 (RTX EAGER), 6 (graph per batch replays its own shapes) fail here before; so
    do round 2's (issue 19) defect 3 (a second context on TensorRT 8.5 has profile -1: one context per engine there)
    and 5 (the IRuntimeConfig of 11.1 / RTX contexts freed at once)."""
    e = env(generation=generation)
    x = _images(e.art, 5)  # profile max 3: chunks of 3 + 2
    with trt_backend.TrtBackend(e.art, cuda_graph=use_graph) as be:
        for n in (1, 4, 4, 1):  # later calls replay graphs of both batch sizes
            _check(be.run_loop(x, n), e.ref, x, n)
        if use_graph:
            assert sorted(be._graphs) == [(2, 1), (2, 4), (3, 1), (3, 4)] and be.use_graphs
            single = generation == "8.5"  # one context per engine: a batch change re-captures
            assert e.gpu.captures_begun == (8 if single else 4) and e.gpu.launches == 8
            assert (be.enc.reshapes, be.syn.reshapes) == ((7, 7) if single else (0, 0))
        if e.info.is_rtx:
            assert be.enc.settings["kernel_specialization"] == ("EAGER" if use_graph else "LAZY")
    assert e.gpu.live() == NOTHING_LIVE


def test_graph_replay_sees_new_images(env):
    e = env()
    with trt_backend.TrtBackend(e.art) as be:
        a, b = _images(e.art, 2, seed=1), _images(e.art, 2, seed=2)
        be.run_loop(a, 3)
        _check(be.run_loop(b, 3), e.ref, b, 3)
        assert e.gpu.captures_begun == 1 and e.gpu.launches == 2


def test_return_steps(env):
    e = env(generation="10.3")
    x = _images(e.art, 2)
    with trt_backend.TrtBackend(e.art) as be:
        res = be.run_loop(x, 3, return_steps=True)
    lats, imgs = e.ref.loop(x, 3)
    for t in range(3):
        np.testing.assert_allclose(res.step_latents[t], lats[t], **TOL)
        np.testing.assert_allclose(res.step_images[t], imgs[t], **TOL)


def test_host_api_returns_fresh_arrays(env):
    """Defect 7: a second encode/synthesize call must not overwrite what the first returned."""
    e = env()
    x1, x2 = _images(e.art, 2, seed=1), _images(e.art, 2, seed=2)
    w = np.broadcast_to(e.art.latent_avg, (2, *e.art.latent_avg.shape)).astype(np.float32)
    y = np.broadcast_to(e.art.avg_feedback, (2, 3, *e.art.spec.input_hw)).astype(np.float32)
    with trt_backend.TrtBackend(e.art) as be:
        first = be.encode(x1, y, w)
        be.encode(x2, y, w)
        np.testing.assert_allclose(first, e.ref.encode(x1, y, w), **TOL)
        img1, fb1 = be.synthesize(first)
        be.synthesize(w)
        r_img, r_fb = e.ref.synthesize(first)
        np.testing.assert_allclose(img1, r_img, **TOL)
        np.testing.assert_allclose(fb1, r_fb, **TOL)


def test_tail_below_engine_min_batch_is_padded(env):
    """Defect 11: engines built for batch 2..3; 4 images = 3 + a tail of 1, padded to 2 and trimmed."""
    e = env(profile=(1, 2, 3), engine_profile=(2, 2, 3))
    x = _images(e.art, 4)
    with trt_backend.TrtBackend(e.art) as be:
        _check(be.run_loop(x, 2), e.ref, x, 2)
        w = np.broadcast_to(e.art.latent_avg, (1, *e.art.latent_avg.shape)).astype(np.float32)
        y = np.broadcast_to(e.art.avg_feedback, (1, 3, *e.art.spec.input_hw)).astype(np.float32)
        np.testing.assert_allclose(be.encode(x[:1], y, w), e.ref.encode(x[:1], y, w), **TOL)


def test_refused_input_shape_is_an_error(env):
    """Minor: set_input_shape's result is checked (record claims batch 4, the engine accepts <= 3)."""
    e = env(engine_profile=(1, 2, 3), record_profile=(1, 2, 4))
    with trt_backend.TrtBackend(e.art) as be:
        with pytest.raises(InputError, match="refused input .*shape \\[4,"):
            be.run_loop(_images(e.art, 4), 1)


def test_refused_tensor_address_is_an_error(env, monkeypatch):
    e = env(generation="11.1")
    monkeypatch.setattr(e.trt.IExecutionContext, "set_tensor_address", lambda self, name, memory: False)
    with trt_backend.TrtBackend(e.art, cuda_graph=False) as be:
        with pytest.raises(cuda.CudaError, match="refused the address of tensor"):
            be.run_loop(_images(e.art, 1), 1)


def test_failed_capture_falls_back_to_eager_once(env, caplog):
    """Defect 5: the original error is reported, the partial graph is not leaked, later calls do not retry."""
    e = env(generation="10.3", unsafe_in_capture=True)
    x = _images(e.art, 2)
    with caplog.at_level(logging.WARNING, "restyle_rt"), trt_backend.TrtBackend(e.art) as be:
        _check(be.run_loop(x, 2), e.ref, x, 2)
        _check(be.run_loop(x, 3), e.ref, x, 3)
        assert not be.use_graphs and not be._graphs
        assert e.gpu.captures_begun == 1 and not e.gpu.graphs and not e.gpu.captures
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "execute_async_v3 failed" in warnings[0], warnings
    assert e.gpu.live() == NOTHING_LIVE


def test_rtx_engine_without_user_allocation_runs_eagerly(env, caplog):
    """Defect 3's runtime side: RTX says not capturable without REQUIRE_USER_ALLOCATION; the loop still works."""
    e = env(flags=())
    x = _images(e.art, 2)
    with caplog.at_level(logging.WARNING, "restyle_rt"), trt_backend.TrtBackend(e.art) as be:
        _check(be.run_loop(x, 2), e.ref, x, 2)
        assert not be.use_graphs and e.gpu.captures_begun == 0
    assert any("REQUIRE_USER_ALLOCATION" in r.getMessage() for r in caplog.records)


def test_capture_error_is_the_first_error_and_stream_is_usable(env):
    """cuda.CudaGraph: an error inside the block is raised as is; the capture is ended; nothing leaks."""
    e = env()
    s = cuda.Stream()
    g = cuda.CudaGraph()
    with pytest.raises(ZeroDivisionError):
        with g.capture(s):
            1 / 0  # noqa: B018 - raises inside the capture
    with pytest.raises(cuda.CudaError, match="cudaMalloc.*cudaErrorStreamCaptureUnsupported"):
        with g.capture(s):
            cuda.DeviceBuffer(16)  # allocation while capturing: the first error
    with pytest.raises(cuda.CudaError, match="cudaStreamEndCapture.*cudaErrorStreamCaptureInvalidated"):
        with g.capture(s):
            e.rt.cudaStreamSynchronize(s.raw)  # error ignored, capture invalidated: seen at the end
    assert not g.ready and not e.gpu.graphs and not e.gpu.captures
    s.synchronize()  # the stream is not left capturing
    cuda.close_all(g, s)
    assert e.gpu.live() == NOTHING_LIVE


def test_graph_replay_through_reshaped_context_is_caught(env):
    """The fake flags what defect 6 did: a graph replayed after its context was given other shapes."""
    e = env(generation="11.1")
    with trt_backend.TrtBackend(e.art) as be:
        be.run_loop(_images(e.art, 2), 1)
        ctx = be.enc.context(2)
        assert ctx.set_input_shape("image", (3, 3, *e.art.spec.input_hw))
        with pytest.raises(FakeGpuMisuse, match="input shapes that its execution context has since changed"):
            be.run_loop(_images(e.art, 2), 1)


def test_incompatible_engine_is_refused(env):
    e = env(cc=(8, 9))
    with pytest.raises(ArtifactError, match="8.6.*this GPU is 8.9.*--rebuild"):
        trt_backend.TrtBackend(e.art)


def test_rtx_runtime_cache_is_saved_and_reloaded(env, caplog):
    e = env()
    with trt_backend.TrtBackend(e.art, cuda_graph=False) as be:
        be.run_loop(_images(e.art, 1), 1)
    cache = e.art.root / trt_backend.RUNTIME_CACHE
    assert cache.read_bytes() == b"fake-runtime-cache"
    cache.write_bytes(b"from another machine")
    with caplog.at_level(logging.INFO, "restyle_rt"), trt_backend.TrtBackend(e.art, cuda_graph=False) as be:
        be.run_loop(_images(e.art, 1), 1)
    assert any("does not match this machine" in r.getMessage() for r in caplog.records)


def test_misaligned_tensor_address_is_refused(env):
    e = env(generation="11.1")
    with trt_backend.TrtBackend(e.art, cuda_graph=False) as be:
        ctx = be.enc.context(1)
        assert ctx.set_tensor_address("latent", be.d_lat[0].ptr)
        assert not ctx.set_tensor_address("latent", be.d_lat[0].ptr + 4)  # TensorRT: >= 256-byte alignment


def test_fake_8_5_gives_later_contexts_profile_minus_1(env):
    """The fake's 8.5 rule has teeth: a second live context cannot enqueue; profile 0 is free once the first dies."""
    import gc

    e = env(generation="8.5")
    plan = (e.art.root / "engines" / "encoder.fp32.engine").read_bytes()
    engine = e.trt.Runtime(e.trt.Logger()).deserialize_cuda_engine(plan)
    first = engine.create_execution_context_without_device_memory()
    second = engine.create_execution_context_without_device_memory()
    assert (first._profile, second._profile) == (0, -1)
    stream = cuda.Stream()
    try:
        assert second.execute_async_v3(stream.handle) is False
        del first
        gc.collect()
        assert engine.create_execution_context_without_device_memory()._profile == 0
    finally:
        stream.close()
