"""TrtBackend's loop logic on a *simulated* device (no GPU, no TensorRT needed).

cuda buffers become host memory, copies become ``memmove``, an "engine" runs its ONNX graph in ONNX Runtime
reading and writing the bound addresses, and a "CUDA graph" records those operations (addresses frozen at capture)
and replays them. This checks seeding, latent ping-pong, feedback hand-over, batch chunking, graph caching and
per-step outputs against the NumPy restatement of the toy model. It does not check TensorRT or CUDA themselves.
"""
from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest

from restyle_rt import artifacts
from restyle_rt.runtime import cuda
from restyle_rt.runtime.backends import trt as trt_backend
from restyle_rt.runtime.trt_compat import TrtInfo

pytestmark = pytest.mark.unit
ort = pytest.importorskip("onnxruntime")

RECORDING: list = []          # non-empty list of ops while a fake capture is open


def _run_or_record(op):
    if RECORDING:
        RECORDING[-1].append(op)
    else:
        op()


class FakeStream:
    raw, handle = None, 0

    def synchronize(self):
        pass

    def close(self):
        pass


class FakePinned(cuda.PinnedBuffer):
    def __init__(self, nbytes):
        self.nbytes = int(nbytes)
        self._mem = np.zeros(max(self.nbytes, 1), np.uint8)
        self.ptr = self._mem.ctypes.data

    def close(self):
        self.ptr = 0


class FakeDevice(FakePinned):
    def _copy(self, dst, src, n, room):
        assert n <= room
        _run_or_record(lambda: ctypes.memmove(dst, src, n))

    def copy_from_host(self, src_ptr, nbytes, stream, offset=0):
        self._copy(self.ptr + offset, src_ptr, nbytes, self.nbytes - offset)

    def copy_to_host(self, dst_ptr, nbytes, stream, offset=0):
        self._copy(dst_ptr, self.ptr + offset, nbytes, self.nbytes - offset)

    def copy_from_device(self, src_ptr, nbytes, stream, offset=0):
        self._copy(self.ptr + offset, src_ptr, nbytes, self.nbytes - offset)


class FakeGraph:
    captures = 0

    def __init__(self):
        self.ops = None

    def capture(self, stream):
        import contextlib

        @contextlib.contextmanager
        def cm():
            RECORDING.append([])
            try:
                yield self
            finally:
                self.ops = RECORDING.pop()
                FakeGraph.captures += 1
        return cm()

    def launch(self, stream):
        for op in self.ops:
            op()

    def close(self):
        self.ops = None


def _array_at(ptr, shape):
    n = int(np.prod(shape))
    return np.frombuffer((ctypes.c_float * n).from_address(ptr), np.float32).reshape(shape)


class FakeContext:
    def __init__(self, sess):
        self.sess, self.shapes, self.addrs = sess, {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def set_tensor_address(self, name, ptr):
        self.addrs[name] = ptr

    def set_device_memory(self, ptr, size):
        pass

    def execute_async_v3(self, stream):
        shapes, addrs = dict(self.shapes), dict(self.addrs)   # frozen, as in a captured graph

        def op():
            feeds = {n: _array_at(addrs[n], s).copy() for n, s in shapes.items()}
            for o, val in zip([o.name for o in self.sess.get_outputs()], self.sess.run(None, feeds)):
                _array_at(addrs[o], val.shape)[...] = val
        _run_or_record(op)
        return True


class FakeEngine:
    def __init__(self, onnx_bytes):
        self.sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.names = [t.name for t in self.sess.get_inputs() + self.sess.get_outputs()]
        self.num_io_tensors = len(self.names)

    def create_runtime_config(self):
        return type("RC", (), {"set_execution_context_allocation_strategy": lambda s, x: None})()

    def create_execution_context(self, rc):
        return FakeContext(self.sess)

    def get_device_memory_size_for_profile_v2(self, i):
        return 4096

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_dtype(self, name):
        return "f32"


class FakeTrt:
    float32 = "f32"
    ExecutionContextAllocationStrategy = type("S", (), {"USER_MANAGED": 2})
    ICudaEngine = type("E", (), {"create_runtime_config": None})

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return FakeEngine(plan)


INFO = TrtInfo("tensorrt", "10.99.0", FakeTrt)


@pytest.fixture
def sim(monkeypatch, make_toy):
    for name, fake in (("Stream", FakeStream), ("DeviceBuffer", FakeDevice), ("PinnedBuffer", FakePinned),
                       ("CudaGraph", FakeGraph)):
        monkeypatch.setattr(cuda, name, fake)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "set_device", lambda d: None)
    monkeypatch.setattr(cuda, "compute_capability", lambda d=0: (8, 6))
    monkeypatch.setattr(trt_backend, "try_load_trt", lambda *a: INFO)
    root, ref = make_toy(profile=(1, 2, 3))
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "engines").mkdir()
    manifest["engines"] = []
    for g in ("encoder", "synthesis"):    # "plans" are the ONNX bytes, run by FakeEngine
        plan = (root / f"{g}.onnx").read_bytes()
        (root / "engines" / f"{g}.fp32.engine").write_bytes(plan)
        manifest["engines"].append({"graph": g, "precision": "fp32", "file": f"engines/{g}.fp32.engine",
                                    "size_bytes": len(plan), "trt_flavour": "tensorrt", "trt_version": "10.99.0",
                                    "compute_capabilities": ["8.6"]})
    artifacts.write_manifest(root, manifest)
    return artifacts.load(root), ref


def _images(art, b, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (b, 3, *art.spec.input_hw)).astype(np.float32)


@pytest.mark.parametrize("use_graph", [True, False])
def test_device_loop_matches_reference(sim, use_graph):
    art, ref = sim
    x = _images(art, 5)                                     # profile max 3: chunks of 3 + 2
    with trt_backend.TrtBackend(art, cuda_graph=use_graph) as be:
        for n in (1, 4, 4):                                 # the second (., 4) call replays cached graphs
            res = be.run_loop(x, n)
            lats, imgs = ref.loop(x, n)
            np.testing.assert_allclose(res.latents, lats[-1], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(res.images, imgs[-1], rtol=1e-5, atol=1e-5)
            assert list(res.steps_used) == [n] * 5
        if use_graph:
            assert sorted(be._graphs) == [(2, 1), (2, 4), (3, 1), (3, 4)]


def test_graph_replay_sees_new_images(sim):
    art, ref = sim
    with trt_backend.TrtBackend(art) as be:
        a, b = _images(art, 2, seed=1), _images(art, 2, seed=2)
        be.run_loop(a, 3)
        captures = FakeGraph.captures
        res = be.run_loop(b, 3)
        assert FakeGraph.captures == captures               # replayed, not re-captured
        np.testing.assert_allclose(res.latents, ref.loop(b, 3)[0][-1], rtol=1e-5, atol=1e-5)


def test_return_steps_and_host_api(sim):
    art, ref = sim
    x = _images(art, 2)
    with trt_backend.TrtBackend(art) as be:
        res = be.run_loop(x, 3, return_steps=True)
        lats, imgs = ref.loop(x, 3)
        for t in range(3):
            np.testing.assert_allclose(res.step_latents[t], lats[t], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(res.step_images[t], imgs[t], rtol=1e-5, atol=1e-5)
        w = np.broadcast_to(art.latent_avg, (2, *art.latent_avg.shape)).astype(np.float32)
        y = np.broadcast_to(art.avg_feedback, (2, 3, *art.spec.input_hw)).astype(np.float32)
        np.testing.assert_allclose(be.encode(x, y, w), ref.encode(x, y, w), rtol=1e-5, atol=1e-5)
        img, fb = be.synthesize(lats[0])
        r_img, r_fb = ref.synthesize(lats[0])
        np.testing.assert_allclose(img, r_img, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fb, r_fb, rtol=1e-5, atol=1e-5)


def test_incompatible_engine_is_refused(sim, monkeypatch):
    from restyle_rt.errors import ArtifactError

    art, _ = sim
    monkeypatch.setattr(cuda, "compute_capability", lambda d=0: (8, 9))
    with pytest.raises(ArtifactError, match="8.6.*this GPU is 8.9.*--rebuild"):
        trt_backend.TrtBackend(art)
