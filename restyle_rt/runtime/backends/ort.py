"""ONNX Runtime backend: CPU by default; CUDA / TensorRT execution providers when onnxruntime has them.

On CPU the generic host loop runs (:func:`restyle_rt.runtime.loop.host_loop`). With a GPU provider,
:meth:`OrtBackend.run_loop` binds OrtValues on the device with IOBinding, so latents and feedback ping-pong there and
only the results come back (nothing is read back per step unless ``return_steps`` asks; early exit takes the host
loop); ``io_binding=True`` runs the same code on the CPU.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...artifacts import Artifacts, int8_graph_path
from ...errors import ArtifactError, BackendUnavailable, InputError
from ...fsio import cache_root
from ...manifest import Int8Record
from ...parity import SHIP_REF_PSNR_DB
from ...spec import BATCH, TensorSpec
from ..backend import Backend, LoopResult
from ..hostinfo import cpu_id, cpu_model
from ..loop import check_batch, check_feed, check_images, check_iters, host_loop

log = logging.getLogger("restyle_rt")

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PRECISIONS = ("fp32", "int8", "auto")
_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)"}


def default_threads() -> int:
    """Intra-op threads: the CPUs this process may run on (ORT's own default ignores affinity masks)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OrtBackend(Backend):
    """Runs ``encoder.onnx`` and ``synthesis.onnx`` with ONNX Runtime.

    ``encode``/``synthesize`` return fresh arrays from ``InferenceSession.run``; :meth:`run_loop` reuses its
    buffers.

    Args:
        artifacts: a verified artifacts directory.
        providers: ONNX Runtime execution providers in priority order, each a name or, as ONNX Runtime takes them,
            a ``(name, options)`` tuple whose options are merged over the backend's own for that provider (e.g.
            ``("CUDAExecutionProvider", {"gpu_mem_limit": 2 << 30})``; a ``device_id`` there also sets the device
            the loop's buffers live on); default: TensorRT, CUDA, then CPU,
            among those the installed onnxruntime has. With the default list, a provider ONNX Runtime cannot
            start (onnxruntime-gpu lists the TensorRT EP even without TensorRT's libraries) is dropped with a
            warning and the backend runs on the next one; a list the caller names is strict: its first provider
            must start, else BackendUnavailable.
        threads: intra-op threads for the CPU provider (default: the CPUs available to this process).
        device_id: the GPU for CUDA/TensorRT providers.
        io_binding: run the loop with IOBinding (default: only on a GPU provider). ``True`` on CPU exercises
            the device-loop code with host memory.
        spinning: let idle intra-op threads spin-wait (ORT's default). Off by default here: slower on the 2-vCPU
            benchmark VM (benchmarks/README.md); turn it on for a dedicated multi-core box if it measures faster.
        precision: ``"fp32"`` (default): the exported graphs. ``"int8"``: the Q/DQ graphs ``restyle-rt calibrate``
            recorded in ``manifest["int8"]`` (the ``cpu`` encoding; a graph it did not ship stays FP32).
            ``"auto"``: INT8 only if the manifest's measured per-step accuracy meets its ship bar, else FP32;
            the choice is logged (:func:`choose_precision`).

    Raises:
        ArtifactError: a graph's inputs/outputs do not match ``spec.graph_io``.
        BackendUnavailable: onnxruntime is missing, or a requested provider is not available.
        InputError: a provider entry that is neither a name nor a ``(name, dict)`` tuple, a provider named twice,
            or GPU providers whose options name different ``device_id``s.
    """

    name = "ort"
    extra = ""  # onnxruntime is a core dependency
    library = "onnxruntime"
    precisions = PRECISIONS
    options = frozenset(
        {"providers", "threads", "device_id", "io_binding", "spinning", "cpu_arena", "mem_pattern", "precision"}
    )
    probed_by_auto = True

    def __init__(
        self,
        artifacts: Artifacts,
        providers: Sequence[str | tuple[str, dict]] | None = None,
        threads: int | None = None,
        device_id: int = 0,
        io_binding: bool | None = None,
        spinning: bool = False,
        cpu_arena: bool = True,
        mem_pattern: bool = False,
        precision: str = "fp32",
    ):
        super().__init__(artifacts)
        self.precision = choose_precision(artifacts, precision)
        self.graph_files = graph_files(artifacts, self.precision)
        self.spinning, self.cpu_arena, self.mem_pattern = bool(spinning), bool(cpu_arena), bool(mem_pattern)
        import onnxruntime as ort

        self._ort = ort
        have = ort.get_available_providers()
        self.default_providers = not providers
        named, self.provider_options = split_providers(providers or ())
        wanted = named if providers else [p for p in GPU_PROVIDERS if p in have] + ["CPUExecutionProvider"]
        missing = [p for p in wanted if p not in have]
        if missing:
            raise BackendUnavailable(
                f"ort backend: execution provider(s) {missing} are not in this onnxruntime "
                f"(available: {have}); install the matching onnxruntime build"
            )
        self.device_id = _device_id(self.provider_options, device_id)
        self.threads = int(threads or default_threads())
        self.sessions = {g: self._session(g, wanted) for g in ("encoder", "synthesis")}
        self.providers = self.sessions["encoder"].get_providers()
        if self.sessions["synthesis"].get_providers()[0] != self.providers[0]:
            raise BackendUnavailable(
                f"ort backend: the encoder runs on {self.providers[0]} but the synthesis on "
                f"{self.sessions['synthesis'].get_providers()[0]}; check the CUDA/TensorRT install"
            )
        self.device = "cuda" if self.providers[0] in GPU_PROVIDERS else "cpu"
        self.io_binding = (self.device != "cpu") if io_binding is None else bool(io_binding)
        self.device_resident = self.device != "cpu"
        log.info("ort backend: providers %s, %d intra-op threads, %s", self.providers, self.threads, self.precision)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return False, f"onnxruntime cannot be imported ({e}); pip install onnxruntime"
        return True, ""

    def _session(self, graph: str, providers: list[str]):
        ort = self._ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.enable_cpu_mem_arena = self.cpu_arena
        so.enable_mem_pattern = self.mem_pattern
        opts = [self._provider_options(p, graph) for p in providers]
        path = self.graph_files[graph]
        try:
            sess = ort.InferenceSession(str(path), sess_options=so, providers=providers, provider_options=opts)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        got = sess.get_providers()
        if got[0] != providers[0]:
            if not self.default_providers:  # the user named these providers: no silent substitute
                raise BackendUnavailable(
                    f"ort backend: {providers[0]} could not be initialised for {graph} "
                    f"(session got {got}); check the CUDA/TensorRT install"
                )
            # the default list: onnxruntime-gpu always lists the TensorRT EP and drops it (or falls back to
            # CUDA + CPU) when the TensorRT libraries are missing; take what ONNX Runtime could start, say so
            log.warning(
                "ort backend: %s could not be initialised for %s; running on %s (install TensorRT for the "
                "TensorRT EP, or pass providers= to require one)",
                providers[0],
                graph,
                got[0],
            )
        verify_io(sess, self.spec.graph_io(graph), f"{path.name}")
        return sess

    def _provider_options(self, provider: str, graph: str) -> dict:
        """The backend's options for ``provider``, with the caller's (``providers=[(name, options)]``) over them."""
        return {**self._default_options(provider, graph), **self.provider_options.get(provider, {})}

    def _default_options(self, provider: str, graph: str) -> dict:
        if provider == "CUDAExecutionProvider":
            return {"device_id": self.device_id}
        if provider == "TensorrtExecutionProvider":
            shapes = self.artifacts.profile.shapes(self.spec, graph)
            fmt = lambda k: ",".join(f"{n}:{'x'.join(map(str, s[k]))}" for n, s in shapes.items())  # noqa: E731
            cache = str(trt_ep_cache_dir(self.artifacts))
            return {
                "device_id": self.device_id,
                "trt_profile_min_shapes": fmt(0),
                "trt_profile_opt_shapes": fmt(1),
                "trt_profile_max_shapes": fmt(2),
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
            }
        return {}

    # --- host API -------------------------------------------------------------------------------------------

    def _check(self, name: str, arrays: dict) -> int:
        return check_feed(self.artifacts, name, arrays, "ort backend")

    def encode(self, image: np.ndarray, feedback: np.ndarray, latent: np.ndarray) -> np.ndarray:
        feed = {"image": image, "feedback": feedback, "latent": latent}
        self._check("encoder", feed)
        return self.sessions["encoder"].run(["latent_next"], feed)[0]  # [B, S, 512]

    def synthesize(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check("synthesis", {"latent": latent})
        image, feedback = self.sessions["synthesis"].run(["image", "feedback"], {"latent": latent})
        return image, feedback  # [B, 3, h, w], [B, 3, H, W]

    # --- device loop ----------------------------------------------------------------------------------------

    def run_loop(
        self, images: np.ndarray, n_iters: int, return_steps: bool = False, early_exit: float | None = None
    ) -> LoopResult:
        """The residual loop; with IOBinding unless on plain CPU or when early exit is asked for.

        Early exit needs each step's latent update on the host, so it always takes the host loop.
        """
        if not self.io_binding or early_exit is not None:
            return host_loop(self, images, n_iters, return_steps=return_steps, early_exit=early_exit)
        return self._bound_loop(images, n_iters, return_steps)

    def _bound_loop(self, images: np.ndarray, n_iters: int, return_steps: bool) -> LoopResult:
        """IOBinding ping-pong: w[a] -> encoder -> w[1-a] -> synthesis -> (image, y); nothing leaves the
        device until the end (or each step with ``return_steps``). UNEXECUTED on a GPU here; run on CPU by the
        tests."""
        check_iters(n_iters, None)
        x_host = check_images(images, self.spec.input_hw, "ort backend")
        b = x_host.shape[0]
        check_batch(self.artifacts.profile, b, "ort backend")
        s, (ih, iw), (h, w) = self.spec.n_styles, self.spec.image_hw, self.spec.input_hw
        dev, ov = (self.device, self.device_id), self._ort.OrtValue
        x = ov.ortvalue_from_numpy(x_host, *dev)  # [B, 3, H, W]
        # copies, never views: on the CPU an OrtValue shares the array's memory and the loop writes these buffers
        # (at batch 1, ascontiguousarray(broadcast_to(seed)) is the seed itself)
        w0 = np.array(np.broadcast_to(self.artifacts.latent_avg, (b, s, 512)), dtype=np.float32)
        lat = [
            ov.ortvalue_from_numpy(w0, *dev),
            ov.ortvalue_from_shape_and_type((b, s, 512), np.float32, *dev),
        ]
        y0 = np.array(np.broadcast_to(self.artifacts.avg_feedback, (b, 3, h, w)), dtype=np.float32)
        y = ov.ortvalue_from_numpy(y0, *dev)  # [B, 3, H, W]
        img = ov.ortvalue_from_shape_and_type((b, 3, ih, iw), np.float32, *dev)  # [B, 3, h, w]
        enc, syn = self.sessions["encoder"], self.sessions["synthesis"]
        bind = []  # bind[a]: (encoder: lat[a] -> lat[1-a], synthesis: lat[1-a] -> (img, y))
        for a in (0, 1):
            be, bs = enc.io_binding(), syn.io_binding()
            for name, val in (("image", x), ("feedback", y), ("latent", lat[a])):
                be.bind_ortvalue_input(name, val)
            be.bind_ortvalue_output("latent_next", lat[1 - a])
            bs.bind_ortvalue_input("latent", lat[1 - a])
            bs.bind_ortvalue_output("image", img)
            bs.bind_ortvalue_output("feedback", y)
            bind.append((be, bs))
        res = LoopResult(latents=None, images=None, steps_used=np.full(b, n_iters, dtype=np.int64))
        a = 0
        for _ in range(n_iters):
            enc.run_with_iobinding(bind[a][0])
            syn.run_with_iobinding(bind[a][1])
            a = 1 - a
            if return_steps:
                res.step_latents.append(np.array(lat[a].numpy(), copy=True))
                res.step_images.append(np.array(img.numpy(), copy=True))
        res.latents = np.array(lat[a].numpy(), dtype=np.float32, copy=True)  # [B, S, 512]
        res.images = np.array(img.numpy(), dtype=np.float32, copy=True)  # [B, 3, h, w]
        return res

    def close(self) -> None:
        self.sessions = {}


def split_providers(providers: Sequence[str | tuple[str, dict]]) -> tuple[list[str], dict[str, dict]]:
    """``providers`` as ONNX Runtime takes them (names, or ``(name, options)`` tuples) -> (names, {name: options}).

    Raises:
        InputError: an entry of another form, or a provider named twice.
    """
    if isinstance(providers, str):
        providers = [providers]
    names, options = [], {}
    for p in providers:
        if isinstance(p, str):
            name, opts = p, None
        elif isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], Mapping):
            name, opts = p[0], dict(p[1])
        else:
            raise InputError(f"ort backend: a provider is a name or a (name, options dict) tuple, got {p!r}")
        if name in names:
            raise InputError(f"ort backend: provider {name} is named twice in {list(providers)!r}")
        names.append(name)
        if opts is not None:
            options[name] = opts
    return names, options


def _device_id(options: dict[str, dict], default: int) -> int:
    """The GPU the sessions and the loop's buffers use: a ``device_id`` in the GPU providers' options, else
    ``default``.

    Raises:
        InputError: the CUDA and TensorRT providers' options name different devices.
    """
    try:
        ids = {int(options[p]["device_id"]) for p in GPU_PROVIDERS if "device_id" in options.get(p, {})}
    except (TypeError, ValueError) as e:
        raise InputError(f"ort backend: a provider's device_id must be an integer ({e})") from None
    if len(ids) > 1:
        raise InputError(
            f"ort backend: the GPU providers' options name different device_id values {sorted(ids)}; "
            "the encoder and synthesis run on one device"
        )
    return ids.pop() if ids else int(default)


def trt_ep_cache_dir(art: Artifacts) -> Path:
    """Where ORT's TensorRT EP keeps its engines: ``ARTIFACTS/engines/ort-trt-cache``, created here (the EP
    creates only the last level and fails otherwise); ``ort-trt/<graphs' hash>`` under ``fsio.cache_root()`` when the
    artifacts directory is read-only (e.g. a Triton model repository)."""
    local = art.root / "engines" / "ort-trt-cache"
    try:
        local.mkdir(parents=True, exist_ok=True)
        if os.access(local, os.W_OK | os.X_OK):
            return local
    except OSError:
        pass
    key = hashlib.sha256(
        "|".join(art.manifest.graphs[g].sha256 or g for g in ("encoder", "synthesis")).encode()
    ).hexdigest()[:16]
    alt = cache_root() / "ort-trt" / key
    alt.mkdir(parents=True, exist_ok=True)
    log.info("ort backend: %s is not writable; TensorRT EP engines go to %s", local, alt)
    return alt


def choose_precision(art: Artifacts, precision: str) -> str:
    """Resolve ``precision`` (``fp32`` | ``int8`` | ``auto``) against the manifest.

    ``auto`` picks ``int8`` only when ``manifest["int8"]`` records that every loop step on its held-out images met
    its ship bar (``meets_ship_bar.encoder``, set by ``restyle-rt calibrate`` from measured accuracy), that the last
    step's image stayed >= :data:`restyle_rt.parity.SHIP_REF_PSNR_DB` from FP32's, all **on this CPU model**
    (:func:`int8_trusted`); else ``fp32``.

    Raises:
        InputError: unknown precision.
        ArtifactError: ``int8`` asked for and the artifacts have no INT8 graphs.
    """
    if precision not in PRECISIONS:
        raise InputError(f"ort backend: precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    rec = art.manifest.int8
    if precision == "int8" and rec is None:
        raise ArtifactError(
            f"{art.root}: no INT8 graphs (manifest has no 'int8' record); "
            f"run `restyle-rt calibrate {art.root} --images DIR` (or --generated N) first"
        )
    if precision != "auto":
        return precision
    ok, why = int8_trusted(rec)
    log.info("ort backend: precision auto -> %s (%s)", "int8" if ok else "fp32", why)
    return "int8" if ok else "fp32"


def int8_trusted(rec: Int8Record | None) -> tuple[bool, str]:
    """Whether an INT8 record's accuracy may be relied on here: it met its ship bar, measured on this CPU model.

    INT8 accuracy depends on the kernels the library picks for the CPU (on the same Q/DQ graph, OpenVINO was 0.40
    rel-L2 off ONNX Runtime on an AMD EPYC and 0.08 on an Intel Xeon), so a record from another CPU, or one that
    does not say where it was measured, is not trusted: run ``restyle-rt calibrate`` on this machine.
    """
    if rec is None:
        return False, "no INT8 graphs"
    if not rec.meets_ship_bar.get("encoder"):
        return False, "recorded INT8 accuracy misses its ship bar"
    psnr = _last_step_psnr(rec)
    if psnr is None or psnr < SHIP_REF_PSNR_DB:
        return False, (
            f"the INT8 loop's last image is {'not recorded' if psnr is None else f'{psnr:.1f} dB'} "
            f"against FP32's; the ship bar asks >= {SHIP_REF_PSNR_DB:g} dB"
        )
    where = rec.measured_on or {}
    if where.get("cpu_id") != cpu_id():
        return False, (
            f"INT8 accuracy was measured on {where.get('cpu') or 'an unrecorded CPU'}, not on this CPU "
            f"({cpu_model()}); run `restyle-rt calibrate` here to measure it"
        )
    return True, "INT8 accuracy recorded within its ship bar on this CPU"


def _last_step_psnr(rec: Int8Record) -> float | None:
    """The recorded image PSNR against FP32 after the last step of the INT8 loop the runtime would run (encoder,
    or encoder + synthesis when a synthesis graph was shipped), CPU encoding; inf when identical, None if absent."""
    label = "encoder+synthesis" if "synthesis" in rec.graphs else "encoder"
    rows = (rec.accuracy.get(label) or {}).get("cpu") or []
    if not rows:
        return None
    v = rows[-1].get("image_psnr_db")
    return float("inf") if v is None else float(v)


def graph_files(art: Artifacts, precision: str) -> dict:
    """``{graph: path}`` the backend loads: the ``cpu`` Q/DQ graphs recorded for ``int8``, else the FP32 ones."""
    files = {g: art.graph_path(g) for g in ("encoder", "synthesis")}
    if precision == "int8":
        for g in files:
            files[g] = int8_graph_path(art, g) or files[g]
    return files


def verify_io(sess, io: tuple[list[TensorSpec], list[TensorSpec]], what: str) -> None:
    """Refuse a session whose inputs/outputs differ from the spec in names, dtype, rank or static dims.

    Raises:
        ArtifactError: naming expected vs found for every mismatch.
    """
    problems = []
    for kind, want, got in (("inputs", io[0], sess.get_inputs()), ("outputs", io[1], sess.get_outputs())):
        found = {a.name: a for a in got}
        if sorted(found) != sorted(t.name for t in want):
            problems.append(f"{kind}: expected {[t.name for t in want]}, found {[a.name for a in got]}")
            continue
        for t in want:
            a = found[t.name]
            exp_type = _ORT_TYPES.get(t.dtype, t.dtype)
            if a.type != exp_type:
                problems.append(f"{t.name}: expected {exp_type}, found {a.type}")
            if (
                len(a.shape) != len(t.shape)
                or any(d != BATCH and g != d for d, g in zip(t.shape, a.shape))
                or isinstance(a.shape[0], int)
            ):
                problems.append(f"{t.name}: expected shape {list(t.shape)}, found {list(a.shape)}")
    if problems:
        raise ArtifactError(f"{what} does not match the graph contract: " + "; ".join(problems))
