"""TensorRT / TensorRT-RTX backend: both engines on one stream, device-resident loop, one CUDA graph per (B, N).

Memory (allocated once, through cuda-python; never torch):

* one activation block shared by every execution context (``USER_MANAGED`` allocation / ``IRuntimeConfig`` on
  TensorRT >= 10 and RTX, ``create_execution_context_without_device_memory`` on 8.5), sized to the larger engine;
  safe because the engines never run concurrently (same stream). Each engine has one context per batch size
  (:mod:`.trt_engine`), so a graph never replays through a context whose shapes changed after capture; below
  TensorRT 8.6 (one context per engine) a graph is captured again after its context was reshaped;
* device I/O for the profile's max batch: ``image``, ``feedback`` (written by synthesis, read by the encoder),
  latents ping-ponged between two buffers, the synthesis ``image``, and the loop seeds (latent_avg and
  avg_feedback tiled over the batch);
* pinned host staging; host copies only at the ends of the loop (and per step with ``return_steps``).

For a fixed batch the whole loop (seed copies + N x (encoder, synthesis)) is captured once as a CUDA graph and
replayed (cache key (B, N)). A capture that fails (or RTX's ``is_stream_capturable`` saying no) switches the
backend to the eager loop for good, with a warning naming the error. On RTX, dynamic-shape kernels are specialised
EAGERly when graphs are on, so a capture never records the generic fallback kernels. A batch below the engines'
minimum is padded up to it (and trimmed). TensorRT-RTX JIT-compiles kernels on first use: its runtime cache is
loaded from and saved to ``ARTIFACTS/engines/rtx-runtime.cache`` so later processes skip the JIT. Its own
CUDA-graph mode is left off because the loop graph captures the engines itself.
"""

from __future__ import annotations

import logging

import numpy as np

from ... import artifacts as A
from ...artifacts import Artifacts, find_engine
from ...errors import ArtifactError, BackendUnavailable, RestyleError
from ...spec import BatchProfile
from .. import cuda
from ..backend import Backend, LoopResult
from ..loop import check_batch, check_images, check_iters, concat_results, pad_to, run_in_chunks
from ..trt_compat import trt_cuda_major, try_load_trt
from .trt_engine import RuntimeCache, TrtEngine

log = logging.getLogger("restyle_rt")
RUNTIME_CACHE = "engines/rtx-runtime.cache"
F32 = np.dtype(np.float32)


def _nbytes(shape) -> int:
    return int(np.prod(shape)) * F32.itemsize


class TrtBackend(Backend):
    """Runs the two engines of an artifacts directory with TensorRT or TensorRT-RTX on one CUDA device.

    Args:
        artifacts: loaded artifacts with engines built by ``restyle-rt build``.
        precision: ``"fp16"``/``"fp32"``; default the best recorded one (fp16 first).
        device: CUDA device ordinal.
        cuda_graph: capture the loop as a CUDA graph for each (batch, n_iters).
        verify_hash: re-hash engine files against the manifest before loading.

    Raises:
        BackendUnavailable: no TensorRT, no device, an unusable driver, or cuda-python for another CUDA major.
        ArtifactError: engines missing, or built for another TensorRT / GPU.
    """

    name = "trt"
    extra = "trt"
    library = "tensorrt"  # or tensorrt_rtx (trt_compat picks the flavour); auto does not probe it, so no version key
    precisions = ("fp16", "fp32", "int8")  # engines; the default is the best one recorded, fp16 first
    options = frozenset({"precision", "device", "cuda_graph", "verify_hash"})
    probed_by_auto = False
    device_resident = True

    def __init__(
        self,
        artifacts: Artifacts,
        precision: str | None = None,
        device: int = 0,
        cuda_graph: bool = True,
        verify_hash: bool = False,
    ):
        super().__init__(artifacts)
        self._closed = True
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"trt backend: {why}")
        info = try_load_trt()
        self.info, self.use_graphs = info, cuda_graph
        self.precision = precision or next(
            (p for p in ("fp16", "fp32") if find_engine(artifacts, "encoder", p)), "fp16"
        )
        cuda.set_device(device)
        cc = cuda.compute_capability(device)
        plans, maxes = {}, []
        for g in ("encoder", "synthesis"):
            rec = A.check_record(artifacts, g, self.precision, info.flavour, info.version, cc, verify_hash)
            plans[g] = (artifacts.root / rec.file).read_bytes()
            maxes.append(rec.profile or artifacts.profile)
        self.profile = BatchProfile(
            max(p.min for p in maxes), max(p.min for p in maxes), min(p.max for p in maxes)
        )  # the engines' own batch range (``--batch``)
        self._graphs: dict[tuple[int, int], cuda.CudaGraph] = {}
        self._stamps: dict[tuple[int, int], tuple[int, int]] = {}  # (b, n) -> engines' reshape counts at capture
        self._runtime = info.module.Runtime(info.module.Logger(info.module.Logger.WARNING))
        self._rt_cache = RuntimeCache(artifacts.root / RUNTIME_CACHE) if info.is_rtx and info.runtime_config else None
        for g, plan in plans.items():
            self._check_validity(g, plan)
        self._set_shapes()
        x, w = self.shape_x, self.shape_w
        self.enc = TrtEngine(
            info,
            self._runtime,
            plans["encoder"],
            "encoder",
            {"image": x, "feedback": x, "latent": w},
            self._rt_cache,
            eager_kernels=cuda_graph,
        )
        self.syn = TrtEngine(
            info,
            self._runtime,
            plans["synthesis"],
            "synthesis",
            {"latent": w},
            self._rt_cache,
            eager_kernels=cuda_graph,
        )
        self.stream = cuda.Stream()
        self._closed = False
        self._allocate()
        log.info(
            "trt backend: %s %s, %s engines, batch %d..%d, shared activation memory %.1f MiB",
            info.flavour,
            info.version,
            self.precision,
            self.profile.min,
            self.bmax,
            self.act.nbytes / 2**20,
        )

    # --- setup --------------------------------------------------------------------------------------------

    @classmethod
    def available(cls) -> tuple[bool, str]:
        info = try_load_trt()
        if info is None:
            return False, "no TensorRT or TensorRT-RTX Python module is importable"
        try:
            cuda.cudart()  # names the install when cuda-python is missing
            if cuda.device_count() == 0:
                return False, "no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES?)"
            want, have = trt_cuda_major(info), cuda.runtime_major()
        except RestyleError as e:  # cuda-python missing, or a driver that cannot serve it
            return False, str(e)
        if want is not None and want != have:
            return False, (
                f"{info.flavour} {info.version} is built for CUDA {want}, but cuda-python links CUDA "
                f"{have}; install `pip install 'cuda-python>={want},<{want + 1}'` (restyle-rt[trt] "
                "extras pin it per CUDA major)"
            )
        return True, ""

    def _check_validity(self, graph: str, plan: bytes) -> None:
        if not self.info.engine_validity:
            return
        validity, diag = self._runtime.get_engine_validity(plan)
        if validity == self.info.module.EngineValidity.INVALID:
            members = self.info.module.EngineInvalidityDiagnostics.__members__.items()
            flags = [n for n, v in members if int(diag) & int(v)]
            raise ArtifactError(
                f"{graph} engine is invalid on this machine ({', '.join(flags) or diag}); run "
                f"`{A.build_command(self.artifacts.root, self.precision)}`"
            )

    def _set_shapes(self) -> None:
        spec = self.spec
        self.bmax = self.profile.max
        self.shape_x = (3, *spec.input_hw)
        self.shape_w = (spec.n_styles, 512)
        self.shape_img = (3, *spec.image_hw)

    def _allocate(self) -> None:
        B = self.bmax
        mem = max(self.enc.memory_size, self.syn.memory_size)
        self.act = cuda.DeviceBuffer(mem)
        self.enc.bind_memory(self.act.ptr, mem)
        self.syn.bind_memory(self.act.ptr, mem)

        def dev(shape) -> cuda.DeviceBuffer:
            return cuda.DeviceBuffer(_nbytes((B, *shape)))

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
        self.enc.enqueue(
            self.stream,
            b,
            {"image": self.d_image.ptr, "feedback": self.d_fb.ptr, "latent": src.ptr, "latent_next": dst.ptr},
        )

    def _synthesis(self, b: int, lat) -> None:
        self.syn.enqueue(self.stream, b, {"latent": lat.ptr, "image": self.d_img.ptr, "feedback": self.d_fb.ptr})

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
        stage = self.h_in.view(np.float32, (self.h_in.nbytes // 4,))[offset // 4 : offset // 4 + arr.size]
        stage[:] = arr.reshape(-1)
        dev.copy_from_host(self.h_in.ptr + offset, arr.nbytes, self.stream)

    def _download(self, dev: cuda.DeviceBuffer, host: cuda.PinnedBuffer, shape) -> np.ndarray:
        dev.copy_to_host(host.ptr, _nbytes(shape), self.stream)
        return host.view(np.float32, shape)

    def _batch(self, n: int) -> int:
        """The engine batch that runs ``n`` rows: ``n`` padded up to the engines' minimum."""
        check_batch(BatchProfile(1, 1, self.bmax), n, "trt backend")
        return max(n, self.profile.min)

    # --- Backend API --------------------------------------------------------------------------------------

    def encode(self, image: np.ndarray, feedback: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """One encoder call; returns a new array (not a view of the backend's staging memory)."""
        n = image.shape[0]
        b = self._batch(n)
        image, feedback, latent = (pad_to(np.ascontiguousarray(a, np.float32), b) for a in (image, feedback, latent))
        self._upload(image, self.d_image)
        self._upload(feedback, self.d_fb, image.nbytes)
        self._upload(latent, self.d_lat[0], 2 * image.nbytes)
        self._encoder(b, self.d_lat[0], self.d_lat[1])
        out = self._download(self.d_lat[1], self.h_lat, (b, *self.shape_w))
        self.stream.synchronize()
        return out[:n].copy()

    def synthesize(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One synthesis call; returns new arrays (not views of the backend's staging memory)."""
        n = latent.shape[0]
        b = self._batch(n)
        self._upload(pad_to(np.ascontiguousarray(latent, np.float32), b), self.d_lat[0])
        self._synthesis(b, self.d_lat[0])
        img = self._download(self.d_img, self.h_img, (b, *self.shape_img))
        fb = self._download(self.d_fb, self.h_fb, (b, *self.shape_x))
        self.stream.synchronize()
        return img[:n].copy(), fb[:n].copy()

    def run_loop(
        self, images: np.ndarray, n_iters: int, return_steps: bool = False, early_exit: float | None = None
    ) -> LoopResult:
        """N residual steps on the device; per-image early exit goes through the generic host loop."""
        check_iters(n_iters, early_exit)
        if early_exit is not None:
            return super().run_loop(images, n_iters, return_steps=return_steps, early_exit=early_exit)
        x = check_images(images, self.spec.input_hw, "trt backend")
        return concat_results(run_in_chunks(self.profile, x, lambda c: self._run_chunk(c, n_iters, return_steps)))

    def _run_chunk(self, x: np.ndarray, n: int, return_steps: bool) -> LoopResult:
        """The loop on one chunk of ``profile.min..max`` rows (:func:`run_in_chunks` pads and trims)."""
        b = self._batch(len(x))
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
        return LoopResult(
            latents=lat.copy(),
            images=img.copy(),
            steps_used=np.full(b, n, np.int64),
            step_latents=step_lat,
            step_images=step_img,
        )

    def _graph(self, b: int, n: int):
        """The cached loop graph for (b, n), captured on first use; :class:`_Eager` when capture is impossible.

        A graph is replayed only while both engines' contexts keep the shapes it was captured with: below TensorRT
        8.6 one context per engine is reshaped between batch sizes, and a reshape since the capture means a new one.
        """
        key = (b, n)
        self.enc.context(b)  # shapes for b (a single-context engine may reshape here)
        self.syn.context(b)
        stamp = (self.enc.reshapes, self.syn.reshapes)
        cached = self._graphs.get(key)
        if cached is not None:
            if self._stamps.get(key) == stamp:
                return cached
            cached.close()
            del self._graphs[key]
        self._steps(b, n)  # warm-up: TensorRT does its shape-dependent setup outside the capture
        self.stream.synchronize()
        if not (self.enc.capturable(self.stream, b) and self.syn.capturable(self.stream, b)):
            return self._no_graphs(
                "TensorRT says the execution contexts are not stream-capturable (RTX engines "
                "need BuilderFlag.REQUIRE_USER_ALLOCATION)",
                b,
                n,
            )
        graph = cuda.CudaGraph()
        try:
            with graph.capture(self.stream):
                self._steps(b, n)
        except cuda.CudaError as e:
            graph.close()
            return self._no_graphs(f"CUDA-graph capture failed: {e}", b, n)
        self._graphs[key], self._stamps[key] = graph, stamp
        log.debug("trt backend: captured loop graph for batch %d, %d steps", b, n)
        return graph

    def _no_graphs(self, why: str, b: int, n: int) -> _Eager:
        log.warning("trt backend: %s; running the loop eagerly from now on", why)
        self.use_graphs = False
        return _Eager(self, b, n)

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.stream.synchronize()
        if self._rt_cache is not None:
            self._rt_cache.save()
        cuda.close_all(*self._graphs.values())
        self._graphs.clear()
        self.enc.close()
        self.syn.close()
        cuda.close_all(
            self.act,
            self.d_image,
            self.d_fb,
            self.d_img,
            *self.d_lat,
            self.d_lat_avg,
            self.d_fb_avg,
            self.h_in,
            self.h_lat,
            self.h_img,
            self.h_fb,
            self.stream,
        )


class _Eager:
    """Stand-in with CudaGraph's ``launch`` for contexts that cannot be captured."""

    def __init__(self, backend: TrtBackend, b: int, n: int):
        self.backend, self.b, self.n = backend, b, n

    def launch(self, stream) -> None:
        self.backend._steps(self.b, self.n)
