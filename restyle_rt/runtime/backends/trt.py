"""TensorRT / TensorRT-RTX backend: both engines on one stream, device-resident loop, one CUDA graph per (B, N).

Memory (allocated once, through cuda-python; never torch):

* one activation block shared by both execution contexts (``USER_MANAGED`` allocation / ``IRuntimeConfig`` on
  TensorRT >= 10 and RTX, ``create_execution_context_without_device_memory`` on 8.5), sized to the larger engine;
  safe because the two engines never run concurrently (same stream);
* device I/O for the profile's max batch: ``image``, ``feedback`` (written by synthesis, read by the encoder),
  latents ping-ponged between two buffers, the synthesis ``image``, and the loop seeds (latent_avg and
  avg_feedback tiled over the batch);
* pinned host staging; host copies only at the ends of the loop (and per step with ``return_steps``).

For a fixed batch the whole loop (seed copies + N x (encoder, synthesis)) is captured once as a CUDA graph and
replayed (cache key (B, N)). TensorRT-RTX JIT-compiles kernels on first use: its runtime cache is loaded from and
saved to ``ARTIFACTS/engines/rtx-runtime.cache`` so later processes skip the JIT. Its own CUDA-graph mode is left
off because the loop graph captures the engines itself.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ...artifacts import Artifacts, find_engine
from ...engine import records as R
from ...errors import ArtifactError, BackendUnavailable
from ...spec import BatchProfile
from .. import cuda
from ..backend import Backend, LoopResult
from ..loop import check_batch, check_images, check_iters
from ..trt_compat import TrtInfo, try_load_trt

log = logging.getLogger("restyle_rt")
RUNTIME_CACHE = "engines/rtx-runtime.cache"
F32 = np.dtype(np.float32)


def _nbytes(shape) -> int:
    return int(np.prod(shape)) * F32.itemsize


class _Engine:
    """A deserialized engine and its execution context, which owns no activation memory."""

    def __init__(self, info: TrtInfo, runtime, plan: bytes, name: str, runtime_cache=None):
        trt = info.module
        self.name = name
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialize the {name} engine (see the TensorRT log)")
        if info.runtime_config:
            rc = self.engine.create_runtime_config()
            rc.set_execution_context_allocation_strategy(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if runtime_cache is not None:
                runtime_cache.attach(rc)
            if hasattr(trt, "CudaGraphStrategy"):
                rc.cuda_graph_strategy = trt.CudaGraphStrategy.DISABLED
            self.context = self.engine.create_execution_context(rc)
        elif info.user_managed_memory:
            self.context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        else:
            self.context = self.engine.create_execution_context_without_device_memory()
        if hasattr(self.engine, "get_device_memory_size_for_profile_v2"):
            self.memory_size = int(self.engine.get_device_memory_size_for_profile_v2(0))
        else:
            self.memory_size = int(getattr(self.engine, "device_memory_size_v2", 0) or self.engine.device_memory_size)
        for i in range(self.engine.num_io_tensors):
            t = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_dtype(t) != trt.float32:
                raise ArtifactError(f"{name} engine tensor {t!r} is {self.engine.get_tensor_dtype(t)}, expected "
                                    "float32 (graph I/O stays FP32; FP16 lives inside)")

    def bind_memory(self, ptr: int, size: int) -> None:
        if hasattr(self.context, "set_device_memory"):
            self.context.set_device_memory(ptr, size)
        else:  # TensorRT 8.5
            self.context.device_memory = ptr

    def enqueue(self, stream: cuda.Stream, shapes: Dict[str, Tuple[int, ...]], addrs: Dict[str, int]) -> None:
        for name, shape in shapes.items():
            self.context.set_input_shape(name, shape)
        for name, ptr in addrs.items():
            self.context.set_tensor_address(name, ptr)
        if not self.context.execute_async_v3(stream.handle):
            raise cuda.CudaError(f"{self.name} execute_async_v3 failed (see the TensorRT log)")


class TrtBackend(Backend):
    """Runs the two engines of an artifacts directory with TensorRT or TensorRT-RTX on one CUDA device.

    Args:
        artifacts: loaded artifacts with engines built by ``restyle-rt build``.
        precision: ``"fp16"``/``"fp32"``; default the best recorded one (fp16 first).
        device: CUDA device ordinal.
        cuda_graph: capture the loop as a CUDA graph for each (batch, n_iters).
        verify_hash: re-hash engine files against the manifest before loading.
    """

    name = "trt"
    extra = "trt"
    device_resident = True

    def __init__(self, artifacts: Artifacts, precision: Optional[str] = None, device: int = 0,
                 cuda_graph: bool = True, verify_hash: bool = False):
        super().__init__(artifacts)
        info = try_load_trt()
        if info is None or cuda.device_count() == 0:
            raise BackendUnavailable(f"trt backend: {self.available()[1]}")
        self.info, self.use_graphs = info, cuda_graph
        self.precision = precision or next((p for p in ("fp16", "fp32") if find_engine(artifacts, "encoder", p)),
                                           "fp16")
        cuda.set_device(device)
        cc = cuda.compute_capability(device)
        plans, maxes = {}, []
        for g in ("encoder", "synthesis"):
            rec = R.check_record(artifacts, g, self.precision, info.flavour, info.version, cc, verify_hash)
            plans[g] = (artifacts.root / rec["file"]).read_bytes()
            maxes.append(BatchProfile(*rec.get("profile", artifacts.profile.to_list())))
        self.profile = min(maxes, key=lambda p: p.max)   # the engines' own batch range (``--batch`` at build)
        self._closed = False
        self._graphs: Dict[Tuple[int, int], cuda.CudaGraph] = {}
        self._runtime = info.module.Runtime(info.module.Logger(info.module.Logger.WARNING))
        self._rt_cache = self._load_runtime_cache()
        for g, plan in plans.items():
            self._check_validity(g, plan)
        self.enc = _Engine(info, self._runtime, plans["encoder"], "encoder", self._rt_cache)
        self.syn = _Engine(info, self._runtime, plans["synthesis"], "synthesis", self._rt_cache)
        self.stream = cuda.Stream()
        self._allocate()
        log.info("trt backend: %s %s, %s engines, batch <= %d, shared activation memory %.1f MiB", info.flavour,
                 info.version, self.precision, self.bmax, self.act.nbytes / 2**20)

    # --- setup --------------------------------------------------------------------------------------------

    @classmethod
    def available(cls) -> Tuple[bool, str]:
        if try_load_trt() is None:
            return False, "no TensorRT or TensorRT-RTX Python module is importable"
        if cuda.device_count() == 0:
            return False, "no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES?)"
        return True, ""

    def _check_validity(self, graph: str, plan: bytes) -> None:
        if not self.info.engine_validity:
            return
        validity, diag = self._runtime.get_engine_validity(plan)
        if validity == self.info.module.EngineValidity.INVALID:
            members = self.info.module.EngineInvalidityDiagnostics.__members__.items()
            flags = [n for n, v in members if int(diag) & int(v)]
            raise ArtifactError(f"{graph} engine is invalid on this machine ({', '.join(flags) or diag}); run "
                                f"`{R.build_command(self.artifacts.root, self.precision)}`")

    def _load_runtime_cache(self):
        if self.info.is_rtx and self.info.runtime_config:
            return _RuntimeCache(self.artifacts.root / RUNTIME_CACHE)
        return None

    def _allocate(self) -> None:
        spec = self.spec
        self.bmax = self.profile.max
        h, w = spec.input_hw
        ih, iw = spec.image_hw
        self.shape_x = (3, h, w)
        self.shape_w = (spec.n_styles, 512)
        self.shape_img = (3, ih, iw)
        B = self.bmax
        mem = max(self.enc.memory_size, self.syn.memory_size)
        self.act = cuda.DeviceBuffer(mem)
        self.enc.bind_memory(self.act.ptr, mem)
        self.syn.bind_memory(self.act.ptr, mem)
        dev = lambda s: cuda.DeviceBuffer(_nbytes((B, *s)))  # noqa: E731
        self.d_image, self.d_fb, self.d_img = dev(self.shape_x), dev(self.shape_x), dev(self.shape_img)
        self.d_lat = (dev(self.shape_w), dev(self.shape_w))
        self.d_lat_avg, self.d_fb_avg = dev(self.shape_w), dev(self.shape_x)
        self.h_in = cuda.PinnedBuffer(_nbytes((B, *self.shape_x)) * 2 + _nbytes((B, *self.shape_w)))
        self.h_lat = cuda.PinnedBuffer(_nbytes((B, *self.shape_w)))
        self.h_img = cuda.PinnedBuffer(_nbytes((B, *self.shape_img)))
        self.h_fb = cuda.PinnedBuffer(_nbytes((B, *self.shape_x)))
        seeds = self.h_in.view(np.float32, (B, *self.shape_w))
        seeds[:] = self.artifacts.latent_avg
        self.d_lat_avg.copy_from_host(self.h_in.ptr, seeds.nbytes, self.stream)
        self.stream.synchronize()
        fbs = self.h_in.view(np.float32, (B, *self.shape_x))
        fbs[:] = self.artifacts.avg_feedback
        self.d_fb_avg.copy_from_host(self.h_in.ptr, fbs.nbytes, self.stream)
        self.stream.synchronize()

    # --- device steps -------------------------------------------------------------------------------------

    def _encoder(self, b: int, src, dst) -> None:
        x = (b, *self.shape_x)
        self.enc.enqueue(self.stream, {"image": x, "feedback": x, "latent": (b, *self.shape_w)},
                         {"image": self.d_image.ptr, "feedback": self.d_fb.ptr, "latent": src.ptr,
                          "latent_next": dst.ptr})

    def _synthesis(self, b: int, lat) -> None:
        self.syn.enqueue(self.stream, {"latent": (b, *self.shape_w)},
                         {"latent": lat.ptr, "image": self.d_img.ptr, "feedback": self.d_fb.ptr})

    def _seed(self, b: int) -> None:
        self.d_lat[0].copy_from_device(self.d_lat_avg.ptr, _nbytes((b, *self.shape_w)), self.stream)
        self.d_fb.copy_from_device(self.d_fb_avg.ptr, _nbytes((b, *self.shape_x)), self.stream)

    def _steps(self, b: int, n: int, on_step=None) -> None:
        self._seed(b)
        for t in range(1, n + 1):
            src, dst = self.d_lat[(t - 1) % 2], self.d_lat[t % 2]
            self._encoder(b, src, dst)
            self._synthesis(b, dst)
            if on_step is not None:
                on_step(t, dst)

    def _upload(self, arr: np.ndarray, dev: cuda.DeviceBuffer, offset: int = 0) -> None:
        stage = self.h_in.view(np.float32, (self.h_in.nbytes // 4,))[offset // 4: offset // 4 + arr.size]
        stage[:] = arr.reshape(-1)
        dev.copy_from_host(self.h_in.ptr + offset, arr.nbytes, self.stream)

    def _download(self, dev: cuda.DeviceBuffer, host: cuda.PinnedBuffer, shape) -> np.ndarray:
        dev.copy_to_host(host.ptr, _nbytes(shape), self.stream)
        return host.view(np.float32, shape)

    # --- Backend API --------------------------------------------------------------------------------------

    def encode(self, image: np.ndarray, feedback: np.ndarray, latent: np.ndarray) -> np.ndarray:
        b = image.shape[0]
        check_batch(self.profile, b, "trt backend")
        self._upload(np.ascontiguousarray(image, np.float32), self.d_image)
        self._upload(np.ascontiguousarray(feedback, np.float32), self.d_fb, image.nbytes)
        self._upload(np.ascontiguousarray(latent, np.float32), self.d_lat[0], 2 * image.nbytes)
        self._encoder(b, self.d_lat[0], self.d_lat[1])
        out = self._download(self.d_lat[1], self.h_lat, (b, *self.shape_w))
        self.stream.synchronize()
        return out

    def synthesize(self, latent: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        b = latent.shape[0]
        check_batch(self.profile, b, "trt backend")
        self._upload(np.ascontiguousarray(latent, np.float32), self.d_lat[0])
        self._synthesis(b, self.d_lat[0])
        img = self._download(self.d_img, self.h_img, (b, *self.shape_img))
        fb = self._download(self.d_fb, self.h_fb, (b, *self.shape_x))
        self.stream.synchronize()
        return img, fb

    def run_loop(self, images: np.ndarray, n_iters: int, return_steps: bool = False,
                 early_exit: Optional[float] = None) -> LoopResult:
        """N residual steps on the device; per-image early exit goes through the generic host loop."""
        check_iters(n_iters, early_exit)
        if early_exit is not None:
            return super().run_loop(images, n_iters, return_steps=return_steps, early_exit=early_exit)
        x = check_images(images, self.spec.input_hw, "trt backend")
        parts = [self._run_chunk(x[i:i + self.bmax], n_iters, return_steps) for i in range(0, len(x), self.bmax)]
        cat = lambda k: np.concatenate([p[k] for p in parts])  # noqa: E731
        steps = [(np.concatenate([p[2][t] for p in parts]), np.concatenate([p[3][t] for p in parts]))
                 for t in range(n_iters)] if return_steps else []
        return LoopResult(latents=cat(0), images=cat(1), steps_used=np.full(len(x), n_iters, np.int64),
                          step_latents=[s[0] for s in steps], step_images=[s[1] for s in steps])

    def _run_chunk(self, x: np.ndarray, n: int, return_steps: bool):
        b = len(x)
        check_batch(self.profile, b, "trt backend")
        self._upload(x, self.d_image)
        step_lat, step_img = [], []
        if return_steps:
            def grab(t, lat):
                w = self._download(lat, self.h_lat, (b, *self.shape_w))
                y = self._download(self.d_img, self.h_img, (b, *self.shape_img))
                self.stream.synchronize()
                step_lat.append(w.copy())
                step_img.append(y.copy())

            self._steps(b, n, grab)
        elif self.use_graphs:
            self._graph(b, n).launch(self.stream)
        else:
            self._steps(b, n)
        lat = self._download(self.d_lat[n % 2], self.h_lat, (b, *self.shape_w))
        img = self._download(self.d_img, self.h_img, (b, *self.shape_img))
        self.stream.synchronize()
        return lat.copy(), img.copy(), step_lat, step_img

    def _graph(self, b: int, n: int) -> cuda.CudaGraph:
        key = (b, n)
        if key not in self._graphs:
            self._steps(b, n)  # warm-up: TensorRT does its shape-dependent setup outside the capture
            self.stream.synchronize()
            capturable = all(getattr(e.context, "is_stream_capturable", lambda s: True)(self.stream.handle)
                             for e in (self.enc, self.syn))
            if not capturable:
                log.warning("trt backend: contexts are not stream-capturable; running the loop eagerly")
                self.use_graphs = False
                return _Eager(self, b, n)
            graph = cuda.CudaGraph()
            with graph.capture(self.stream):
                self._steps(b, n)
            self._graphs[key] = graph
            log.debug("trt backend: captured loop graph for batch %d, %d steps", b, n)
        return self._graphs[key]

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.stream.synchronize()
        if isinstance(self._rt_cache, _RuntimeCache):
            self._rt_cache.save()
        cuda.close_all(*self._graphs.values())
        self._graphs.clear()
        del self.enc, self.syn
        cuda.close_all(self.act, self.d_image, self.d_fb, self.d_img, *self.d_lat, self.d_lat_avg, self.d_fb_avg,
                       self.h_in, self.h_lat, self.h_img, self.h_fb, self.stream)


class _Eager:
    """Stand-in with CudaGraph's ``launch`` for contexts that cannot be captured."""

    def __init__(self, backend: TrtBackend, b: int, n: int):
        self.backend, self.b, self.n = backend, b, n

    def launch(self, stream) -> None:
        self.backend._steps(self.b, self.n)


class _RuntimeCache:
    """TensorRT-RTX runtime (JIT kernel) cache, persisted next to the engines."""

    def __init__(self, path: Path):
        self.path, self.cache = Path(path), None

    def attach(self, runtime_config) -> None:
        if self.cache is None:
            self.cache = runtime_config.create_runtime_cache()
            if self.path.is_file() and not self.cache.deserialize(self.path.read_bytes()):
                log.info("TensorRT-RTX runtime cache %s does not match this machine; rebuilding it", self.path)
        runtime_config.set_runtime_cache(self.cache)

    def save(self) -> None:
        if self.cache is not None:
            try:
                R.write_bytes_atomic(self.path, self.cache.serialize())
            except OSError as e:  # read-only artifacts: the cache is an optimisation only
                log.warning("could not save the TensorRT-RTX runtime cache to %s: %s", self.path, e)
