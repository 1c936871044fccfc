"""Build TensorRT / TensorRT-RTX engines for an artifacts directory, directly on the TensorRT API.

Two precision paths, chosen from the installed TensorRT (:class:`restyle_rt.runtime.trt_compat.TrtInfo`):

* **strongly typed** (TensorRT >= 10.12, 11.x, TensorRT-RTX): FP32 engines build from ``<graph>.onnx``, FP16 engines
  from ``engines/<graph>.fp16.onnx`` (:mod:`restyle_rt.export.fp16`: demodulation, normalisation and latent
  accumulation stay FP32 inside it).
* **precision flags** (TensorRT 8.5 - 10.11, e.g. JetPack 5/6): ``BuilderFlag.FP16`` on the FP32 ONNX, with the
  same keep-in-FP32 node set pinned through layer precision + ``OBEY_PRECISION_CONSTRAINTS``.

FP32 engines clear ``BuilderFlag.TF32`` (IEEE FP32). TensorRT-RTX engines set ``BuilderFlag.REQUIRE_USER_ALLOCATION``
(the backend's CUDA-graph capture needs it). Every build reads its settings back from TensorRT, checks them against
what the backend needs and records them (:mod:`.settings`). Why not Polygraphy: docs/architecture.md.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts as A
from .. import fsio
from ..errors import BuildError
from ..manifest import EngineRecord
from ..runtime.trt_compat import TrtInfo, load_trt
from ..spec import GRAPHS, BatchProfile, ModelSpec
from . import records as R
from .settings import USER_ALLOCATION_FLAG, problems, read_settings

log = logging.getLogger("restyle_rt")

RTX_EXCLUDED_CC = ("7.5",)  # TensorRT-RTX cannot compile FP32 GEMM for Turing; our modulation GEMMs stay FP32


def supported_compute_capabilities(info: TrtInfo) -> list[str]:
    """Every AOT target the installed TensorRT-RTX knows (its ``ComputeCapability.SM*`` members), as ``"M.m"``."""
    names = [n for n in info.module.ComputeCapability.__members__ if n.startswith("SM")]
    return [R.cc_str((int(n[2:-1]), int(n[-1]))) for n in names]


def default_compute_capabilities(info: TrtInfo) -> list[str]:
    """TensorRT-RTX AOT targets: every SM the installed version knows, except Turing (see RTX_EXCLUDED_CC).

    Engine size does not grow with the list (kernels are JIT-compiled on the device; measured with 1.7.1: 1 vs 5
    targets gave the same plan size), so the default is broad.
    """
    return [c for c in supported_compute_capabilities(info) if c not in RTX_EXCLUDED_CC]


@dataclass
class BuildOptions:
    """What ``restyle-rt build`` was asked for."""

    precision: str = "fp16"
    profile: BatchProfile | None = None
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    rebuild: bool = False
    compute_capabilities: Sequence[str] | None = None  # RTX AOT targets, "M.m" strings or ["current"]


def _make_logger(trt):
    trt_log = logging.getLogger("restyle_rt.trt")

    class _Logger(trt.ILogger):
        """Routes TensorRT messages to logging and keeps errors for the BuildError message."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            S = trt.ILogger.Severity
            if severity in (S.INTERNAL_ERROR, S.ERROR):
                self.errors.append(msg)
                trt_log.error(msg)
            elif severity == S.WARNING:
                trt_log.warning(msg)
            else:
                trt_log.debug(msg)

    return _Logger()


class EngineBuilder:
    """Builds one serialized engine from one ONNX graph (parse -> network -> config -> plan).

    Args:
        info: the TensorRT flavour to build with.
        options: precision, profile, workspace, timing cache, compute capabilities.
    """

    def __init__(self, info: TrtInfo, options: BuildOptions):
        self.info, self.options = info, options
        self.trt = info.module
        self.logger = _make_logger(self.trt)
        self.builder = self.trt.Builder(self.logger)

    @property
    def strongly_typed(self) -> bool:
        return self.info.strongly_typed

    @property
    def user_allocation(self) -> bool:
        """``BuilderFlag.REQUIRE_USER_ALLOCATION`` exists (TensorRT-RTX >= 1.2) and is set on every build."""
        return hasattr(self.trt.BuilderFlag, USER_ALLOCATION_FLAG)

    def needs_device(self) -> bool:
        """Whether :meth:`target_ccs` needs the local GPU: standard TensorRT, or RTX asked for ``current``."""
        return not self.info.compute_capability_api or list(self.options.compute_capabilities or []) == ["current"]

    def target_ccs(self, device_cc: tuple[int, int] | None) -> list[str]:
        """Compute capabilities the plan will run on (recorded in the manifest).

        Raises:
            BuildError: no device where one is needed, or a target TensorRT-RTX cannot build for (named, with
                the targets it can and the standard-TensorRT alternative).
        """
        if not self.info.compute_capability_api:
            if device_cc is None:
                raise BuildError(
                    f"{self.info.flavour} {self.info.version} builds for the GPU it runs on, and no "
                    "CUDA device is visible; build on the target machine (or use TensorRT-RTX for AOT "
                    "builds)"
                )
            return [R.cc_str(device_cc)]
        ccs = self.options.compute_capabilities or default_compute_capabilities(self.info)
        current = list(ccs) == ["current"]
        if current:
            if device_cc is None:
                raise BuildError("--compute-capability current needs a visible CUDA device")
            ccs = [R.cc_str(device_cc)]
        try:
            ccs = R.cc_list(ccs)
        except ValueError as e:
            raise BuildError(str(e)) from None
        known = supported_compute_capabilities(self.info)
        unknown = [c for c in ccs if c not in known]
        if unknown:
            what = f"this GPU's compute capability {unknown[0]}" if current else f"compute capability {unknown[0]}"
            raise BuildError(
                f"{self.info.flavour} {self.info.version} cannot build for {what}: it targets {', '.join(known)} "
                "only (no Hopper/data-centre GPUs such as H100/H200 = 9.0, no Jetson). Build with standard TensorRT "
                "on that GPU instead (`pip install tensorrt`, then `restyle-rt build ARTIFACTS --flavour tensorrt`)"
                + ("" if current else ", or pick --compute-capability from the supported list")
            )
        return ccs

    def _network(self, onnx_path: Path):
        trt = self.trt
        flags = 0
        F = trt.NetworkDefinitionCreationFlag
        if self.strongly_typed and self.info.has_strongly_typed_flag:
            flags |= 1 << int(F.STRONGLY_TYPED)
        if self.info.explicit_batch_flag:
            flags |= 1 << int(F.EXPLICIT_BATCH)
        network = self.builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BuildError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errs or self.logger.errors))
        return network, parser

    def _config(self, network, spec: ModelSpec, graph: str, ccs: list[str], keep_fp32: set[str]):
        trt, opt = self.trt, self.options
        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opt.workspace_gb * (1 << 30)))
        profile = self.builder.create_optimization_profile()
        shapes = (opt.profile or BatchProfile()).shapes(spec, graph)
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if sorted(names) != sorted(shapes):
            raise BuildError(f"{graph}: network inputs {names} differ from the spec's {sorted(shapes)}")
        for name, (mn, op, mx) in shapes.items():
            profile.set_shape(name, mn, op, mx)
        config.add_optimization_profile(profile)
        if self.user_allocation:  # the backend captures the loop as a CUDA graph; RTX allows it only with this
            config.set_flag(getattr(trt.BuilderFlag, USER_ALLOCATION_FLAG))
        if opt.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if opt.precision == "fp16" and not self.strongly_typed:
            self._pin_fp32(network, config, keep_fp32)
        if opt.precision == "int8" and not self.strongly_typed:  # explicit quantization under precision flags
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
        if self.info.compute_capability_api:
            caps = trt.ComputeCapability
            targets = [getattr(caps, "SM" + c.replace(".", "")) for c in ccs]
            config.num_compute_capabilities = len(targets)
            for i, cap in enumerate(targets):
                config.set_compute_capability(cap, i)
        return config, profile

    def _pin_fp32(self, network, config, keep_fp32: set[str]) -> None:
        """Precision-flag path: FP16 everywhere except layers of the keep-in-FP32 ONNX nodes."""
        trt = self.trt
        if not self.info.precision_flags:
            raise BuildError(f"{self.info.flavour} {self.info.version} has neither strong typing nor FP16 flags")
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            outs = [layer.get_output(k) for k in range(layer.num_outputs)]
            if layer.name in keep_fp32 or any(o.name in keep_fp32 for o in outs):
                if all(o.dtype in (trt.float32, trt.float16) for o in outs):
                    layer.precision = trt.float32
                    for k in range(layer.num_outputs):
                        layer.set_output_type(k, trt.float32)
                    pinned += 1
        log.info("precision-flag build: %d layers pinned to FP32", pinned)

    def _timing_cache(self, config):
        path = self.options.timing_cache
        if path is None:
            return None
        if not self.info.timing_cache:
            log.info("timing cache %s ignored: %s has no effect with it", path, self.info.flavour)
            return None
        blob = Path(path).read_bytes() if Path(path).is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=True)
        return cache

    def configure(
        self, onnx_path: Path, spec: ModelSpec, graph: str, ccs: list[str], keep_fp32: set[str] = frozenset()
    ):
        """Parse and configure one build; read its settings back from TensorRT and check them.

        Returns:
            ``(network, parser, config, settings)``; ``settings`` is :func:`.settings.read_settings`'s dict.

        Raises:
            BuildError: unparsable ONNX, or settings the TensorRT backend cannot run with (each one named).
        """
        self.logger.errors.clear()
        network, parser = self._network(onnx_path)
        config, profile = self._config(network, spec, graph, ccs, keep_fp32)
        settings = read_settings(self.trt, network, config, profile)
        why = problems(
            settings,
            strongly_typed=self.strongly_typed,
            user_allocation=self.user_allocation,
            precision=self.options.precision,
            batch=(self.options.profile or BatchProfile()).to_list(),
            expected_io=expected_io(spec, graph),
            ccs=ccs if self.info.compute_capability_api else None,
        )
        if why:
            raise BuildError(
                f"the {graph} {self.options.precision} engine would not suit the TensorRT backend: " + "; ".join(why)
            )
        return network, parser, config, settings

    def build(
        self, onnx_path: Path, spec: ModelSpec, graph: str, ccs: list[str], keep_fp32: set[str] = frozenset()
    ) -> tuple[bytes, dict]:
        """(serialized plan, settings) for ``onnx_path``; raises BuildError with TensorRT's errors on failure."""
        network, _parser, config, settings = self.configure(onnx_path, spec, graph, ccs, keep_fp32)
        cache = self._timing_cache(config)
        plan = self.builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError(
                f"building the {graph} {self.options.precision} engine failed: "
                + ("; ".join(self.logger.errors[-5:]) or "see the TensorRT log")
            )
        if cache is not None:
            R.write_bytes_atomic(Path(self.options.timing_cache), cache.serialize())
        return plan, settings


def expected_io(spec: ModelSpec, graph: str) -> dict[str, tuple[str, list[int]]]:
    """``{name: (mode, shape)}`` the backend binds for ``graph`` (``-1`` = the dynamic batch)."""
    ins, outs = spec.graph_io(graph)
    return {
        **{t.name: ("input", list(t.concrete(-1))) for t in ins},
        **{t.name: ("output", list(t.concrete(-1))) for t in outs},
    }


def _source_sha(art: A.Artifacts, graph: str) -> str:
    return art.manifest.graphs[graph].sha256 or A.sha256_file(art.graph_path(graph))


def _onnx_for(art: A.Artifacts, graph: str, precision: str, strongly_typed: bool) -> tuple[Path, set[str]]:
    """(ONNX to parse, names to pin FP32) for the requested precision path."""
    src = art.graph_path(graph)
    if precision == "fp32":
        return src, set()
    if precision == "int8":
        src = int8_onnx(art, graph) or src  # a graph without INT8 Q/DQ builds FP16 below
        if src.parent.name == "int8":
            if not strongly_typed:  # precision flags: INT8 + FP16 flags on the FP32 Q/DQ graph
                return src, set()
            return int8_fp16_onnx(src, art.root / R.ENGINES_DIR / f"{graph}.int8.fp16.onnx"), set()
    from ..export import fp16  # onnx is needed from here on

    if not strongly_typed:
        import onnx

        model = onnx.load(str(src), load_external_data=False)
        fp16._name_nodes(model.graph)
        keep = fp16.keep_fp32_nodes(model)
        outs = {o for n in model.graph.node if n.name in keep for o in n.output}
        return src, keep | outs
    dst = art.root / R.fp16_onnx_file(graph)
    log.info("deriving %s from %s (FP32 demodulation / latent accumulation)", dst.name, src.name)
    fp16.export_fp16(src, dst)
    return dst, set()


def int8_onnx(art: A.Artifacts, graph: str) -> Path | None:
    """The TensorRT-encoded Q/DQ graph ``restyle-rt calibrate`` recorded for ``graph`` (None: it shipped none).

    INT8 engines use explicit quantization: the ONNX's Q/DQ nodes say what runs INT8 (S8 symmetric, FP32 bias);
    strongly typed builds take its FP16-elsewhere derivative (:func:`int8_fp16_onnx`).

    Raises:
        BuildError: the artifacts were never calibrated.
    """
    rec = art.manifest.int8
    if rec is None:
        raise BuildError(f"{art.root} has no INT8 graphs; run `restyle-rt calibrate {art.root} --images DIR` first")
    encodings = rec.graphs.get(graph)
    return art.root / encodings["trt"].file if encodings else None


def int8_fp16_onnx(src: Path, dst: Path) -> Path:
    """The Q/DQ graph with FP16 elsewhere, for strongly typed builds (the FP16 pass of restyle_rt.export.fp16 keeps
    demodulation and the latent accumulation FP32; Q/DQ scales become FP16, which DequantizeLinear accepts from
    opset 19, so the opset is raised to 19 when lower)."""
    import onnx

    from ..export import fp16

    m = fp16.convert_to_fp16(onnx.load(str(src)))
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx") and o.version < 19:
            o.version = 19
    dst.parent.mkdir(parents=True, exist_ok=True)
    big = m.ByteSize() > (1 << 31) - (1 << 26)
    onnx.save(m, str(dst), save_as_external_data=big, location=dst.name + ".data" if big else None)
    log.info("derived %s (INT8 Q/DQ, FP16 elsewhere) from %s", dst.name, src.name)
    return dst


def build_engines(
    artifacts_dir,
    precision: str = "fp16",
    profile: BatchProfile | None = None,
    workspace_gb: float = 4.0,
    timing_cache=None,
    rebuild: bool = False,
    compute_capabilities: Sequence[str] | None = None,
    graphs: Sequence[str] = GRAPHS,
    flavour: str = "",
) -> list[EngineRecord]:
    """Build (or keep, when current) one engine per graph and record each in ``manifest["engines"]``.

    Args:
        artifacts_dir: directory written by ``restyle-rt export``.
        precision: ``"fp16"`` or ``"fp32"``.
        profile: batch min/opt/max; default the manifest's ``batch_profile``.
        workspace_gb: builder workspace pool limit.
        timing_cache: file to load and update (standard TensorRT; TensorRT-RTX ignores it).
        rebuild: build even when a matching engine is recorded.
        compute_capabilities: TensorRT-RTX AOT targets ("8.6", ...) or ["current"]; default: all but Turing.
        graphs: which graphs to build.
        flavour: force "tensorrt" or "tensorrt-rtx".

    Returns:
        The engine records (also written to the manifest), kept or built, in the order of ``graphs``.

    Raises:
        BuildError, ArtifactError, BackendUnavailable.
    """
    if precision not in R.PRECISIONS:
        raise BuildError(f"precision {precision!r}: expected one of {', '.join(R.PRECISIONS)}")
    art = A.load(artifacts_dir)  # verified once; each built record is written back through the manifest on disk
    fsio.check_writable_dir(art.root / R.ENGINES_DIR, "engines directory")  # before TensorRT loads or builds
    if timing_cache:
        fsio.check_writable_file(timing_cache, "--timing-cache")
    info = load_trt(flavour)
    opts = BuildOptions(
        precision,
        profile or art.profile,
        workspace_gb,
        Path(timing_cache) if timing_cache else None,
        rebuild,
        compute_capabilities,
    )
    builder = EngineBuilder(info, opts)
    ccs = builder.target_ccs(_device_cc() if builder.needs_device() else None)
    out = []
    for graph in graphs:
        want = R.BuildRequest(
            trt_flavour=info.flavour,
            trt_version=info.version,
            compute_capabilities=tuple(ccs),
            profile=opts.profile,
            source_sha256=_source_sha(art, graph),
            require_user_allocation=builder.user_allocation,
        )
        existing = A.find_engine(art, graph, precision)
        if not rebuild and R.is_current(art.root, existing, want):
            log.info("%s %s engine is up to date (%s)", graph, precision, existing.file)
            out.append(existing)
            continue
        onnx_path, keep = _onnx_for(art, graph, precision, builder.strongly_typed)
        log.info(
            "building %s %s engine with %s %s (%s, targets %s, batch %s) ...",
            graph,
            precision,
            info.flavour,
            info.version,
            "strongly typed" if builder.strongly_typed else "precision flags",
            ",".join(ccs),
            "/".join(map(str, opts.profile.to_list())),
        )
        t0 = time.perf_counter()
        plan, settings = builder.build(onnx_path, art.spec, graph, ccs, keep)
        seconds = time.perf_counter() - t0
        path = art.root / R.engine_file(graph, precision)
        R.write_bytes_atomic(path, plan)
        rec = dict(
            graph=graph,
            precision=precision,
            file=R.engine_file(graph, precision),
            # the settings read back from TensorRT win over what was asked for
            sha256=A.sha256_file(path),
            size_bytes=path.stat().st_size,
            **{**want.to_dict(), **settings},
            build_seconds=round(seconds, 2),
            workspace_gb=workspace_gb,
            onnx={"file": str(onnx_path.relative_to(art.root)), "sha256": A.sha256_file(onnx_path)},
            built_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        record = EngineRecord.from_dict(rec, where=f"{graph} {precision} engine record")
        art.manifest = R.upsert_record(art.root, record)
        log.info("built %s %s engine: %d bytes in %.1f s", graph, precision, record.size_bytes, seconds)
        out.append(record)
    return out


def _device_cc() -> tuple[int, int] | None:
    from ..runtime import cuda

    return cuda.compute_capability(0) if cuda.device_count() > 0 else None
