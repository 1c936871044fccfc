"""``calibrate()``: loop-aware INT8 calibration of an artifacts directory, end to end.

1. images: calibration + held-out (:mod:`.data`);
2. the FP32 loop over both, every step's graph inputs recorded (:mod:`.loop`);
3. activation ranges from *every* step's inputs (and, for the comparison, from step 1 only) (:mod:`.qdq`);
4. per-layer sensitivity of the loop output, the most sensitive layers kept in FP32 (:mod:`.sensitivity`);
5. Q/DQ graphs in the ``cpu`` and ``trt`` encodings, accuracy per loop step on the held-out images vs FP32;
6. the record in ``manifest["int8"]``. The synthesis Q/DQ graphs are kept only if the INT8 loop meets the ship bar.

Files written into the artifacts dir: ``int8/<graph>.<encoding>.onnx`` (+ ``.data``), ``int8/<graph>.ranges.json``
(ORT's calibration cache), ``int8/<graph>.sensitivity.tsv``, and with matplotlib ``int8/<graph>.keep_curve.png``
and ``int8/accuracy.png`` (:mod:`.plots`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime

from .. import artifacts as A
from ..errors import InputError
from ..manifest import Int8Record
from ..parity import TOLERANCES
from ..runtime.hostinfo import machine_record
from . import data as D
from . import emulate as E
from . import plots, qdq
from . import sensitivity as S
from .loop import FeedReader, LoopFeeds, run_loop, session, step_accuracy
from .loop import meets_bar as loop_meets_bar

log = logging.getLogger("restyle_rt")

INT8_DIR = "int8"
# Ship bar: an INT8 loop is offered (and `auto` may pick it) only if every step on the held-out images is within
# the bound the FP16 loop already ships under (parity.TOLERANCES "ort-fp16-proxy-loop").
SHIP_BAR = {
    "latent_rel_l2": TOLERANCES[("ort-fp16-proxy-loop", "fp16", "latent")].rel_l2,
    "image_psnr_db": TOLERANCES[("ort-fp16-proxy-loop", "fp16", "image")].min_psnr_db,
}


@dataclass
class CalibrationConfig:
    """What ``restyle-rt calibrate`` was asked for (see the CLI for each option's meaning)."""

    images: str | None = None
    generated: int | None = None
    checkpoint: str | None = None
    count: int | None = None
    held_out: int = 8
    steps: int = 5
    method: str = "entropy"
    graphs: Sequence[str] = ("encoder", "synthesis")
    sensitivity_images: int = 2
    sensitivity_steps: int | None = None  # loop steps of the sweep (default: steps)
    keep_rule: str = "share"  # "share" | "bar" (see the sensitivity module)
    keep_share: float = 0.5
    max_keep_frac: float = 0.1
    kept: dict[str, list[str]] | None = None  # explicit kept layers (skips the sweep for those graphs)
    compare_step1: bool = True
    batch: int = 4
    seed: int = 0
    progress: bool = True


def meets_bar(rows: list[dict], bar: dict[str, float] = SHIP_BAR) -> bool:
    """True when every step's latent rel-L2 and image PSNR are within ``bar``."""
    return loop_meets_bar(rows, bar)


class _Run:
    """State of one calibration: FP32 sessions, reference loops, the temp dir."""

    def __init__(self, art: A.Artifacts, cfg: CalibrationConfig, imgs: D.ImageSet, tmp: Path):
        self.art, self.cfg, self.imgs, self.tmp = art, cfg, imgs, tmp
        self.fp32 = {g: qdq.named(art.graph_path(g), tmp) for g in ("encoder", "synthesis")}
        self.sess = {g: session(p) for g, p in self.fp32.items()}
        self.ref_cal = self.loop(imgs.calib, {})
        self.ref_hold = self.loop(imgs.held_out, {})
        k = max(1, min(cfg.sensitivity_images, len(imgs.calib)))
        self.sens_x = imgs.calib[:k]
        self.sens_steps = min(cfg.sensitivity_steps or cfg.steps, cfg.steps)
        self.ref_sens = LoopFeeds(
            latents=[a[:k] for a in self.ref_cal.latents[: self.sens_steps]],
            images=[a[:k] for a in self.ref_cal.images[: self.sens_steps]],
        )

    def loop(self, x, graphs: dict[str, Path], steps: int | None = None) -> LoopFeeds:
        """The loop with the given graphs replacing the FP32 ones."""

        def pick(g):  # a graph path, or a session-like object (the sweep's masked session)
            v = graphs.get(g)
            return self.sess[g] if v is None else v if hasattr(v, "run") else session(v)

        return run_loop(self.art, pick("encoder"), pick("synthesis"), x, steps or self.cfg.steps, self.cfg.batch)

    def feeds(self, graph: str):
        return self.ref_cal.encoder if graph == "encoder" else self.ref_cal.synthesis

    def ranges(self, graph: str, steps=None, tag: str = "") -> Path:
        r = qdq.compute_ranges(self.fp32[graph], FeedReader(self.feeds(graph), steps, self.cfg.batch), self.cfg.method)
        return qdq.save_ranges(r, self.tmp / f"{graph}{tag}.ranges.json")

    def quantized(self, graph: str, ranges: Path, encoding: str, exclude=(), name="") -> Path:
        out = self.tmp / (name or f"{graph}.{encoding}.onnx")
        return qdq.write_qdq(self.fp32[graph], out, ranges, self.cfg.method, encoding, exclude)

    def sweep(self, graph: str, ranges: Path) -> S.Sweep:
        """Single-layer sensitivities and the keep curve, from one switchable Q/DQ graph (:mod:`.emulate`)."""
        full = self.quantized(graph, ranges, "cpu", name=f"{graph}.all.cpu.onnx")
        sw = E.switch_model(self.fp32[graph], full, self.tmp / f"{graph}.switch.onnx", qdq.OP_TYPES)
        for f in (full, Path(str(full) + ".data")):
            f.unlink(missing_ok=True)
        sess = session(sw.path)

        def evaluate(include):
            feeds = {graph: E.MaskedSession(sess, sw.mask(include))}
            return step_accuracy(self.ref_sens, self.loop(self.sens_x, feeds, self.sens_steps))

        nodes = qdq.quantizable_nodes(self.fp32[graph])
        return S.sweep(nodes, evaluate, self.cfg.max_keep_frac, self.cfg.progress, graph)


def calibrate(artifacts_dir, cfg: CalibrationConfig) -> dict:
    """Calibrate, write the Q/DQ graphs into ``artifacts_dir/int8`` and record them in the manifest.

    Returns:
        The ``manifest["int8"]`` record, as written (JSON).

    Raises:
        InputError: bad options (both or neither image source, unknown method or graph).
        ArtifactError: the artifacts directory is unusable.
    """
    if (cfg.images is None) == (cfg.generated is None):
        raise InputError("give exactly one calibration source: --images DIR or --generated N")
    if "encoder" not in cfg.graphs or not set(cfg.graphs) <= {"encoder", "synthesis"}:
        raise InputError(f"graphs {list(cfg.graphs)}: expected 'encoder' and optionally 'synthesis'")
    art = A.load(artifacts_dir)
    t0 = time.perf_counter()
    imgs = (
        D.from_folder(art, cfg.images, cfg.count, cfg.held_out)
        if cfg.images
        else D.generated(art, cfg.generated, cfg.held_out, cfg.seed, cfg.checkpoint)
    )
    out_dir = art.root / INT8_DIR
    with _ram_tempdir(), tempfile.TemporaryDirectory(prefix="restyle-rt-int8-") as tmp:
        run = _Run(art, cfg, imgs, Path(tmp))
        rec = _record_head(cfg, imgs)
        enc = _calibrate_graph(run, "encoder", {}, rec)
        if "synthesis" in cfg.graphs:
            _calibrate_graph(run, "synthesis", {"encoder": enc["cpu"]}, rec)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir()
        for g, files in rec["graphs"].items():
            for _encoding, f in files.items():
                src = run.tmp / Path(f["file"]).name
                f.update(_move_graph(src, out_dir), summary=qdq.qdq_summary(out_dir / src.name))
            if (run.tmp / f"{g}.ranges.json").exists():
                shutil.copy(run.tmp / f"{g}.ranges.json", out_dir / f"{g}.ranges.json")
        for g in rec["sensitivity"]:  # also for a graph not shipped: what the sweep measured is worth keeping
            if (run.tmp / f"{g}.sensitivity.tsv").exists():
                shutil.copy(run.tmp / f"{g}.sensitivity.tsv", out_dir / f"{g}.sensitivity.tsv")
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    record = Int8Record.from_dict(rec, where="the int8 record")
    manifest = A.load(art.root).manifest  # as on disk now (an engine build may have recorded engines meanwhile)
    A.write_manifest(art.root, dataclasses.replace(manifest, int8=record))
    log.info("INT8 graphs written to %s (%s) in %.0f s", out_dir, ", ".join(rec["graphs"]), rec["seconds"])
    plots.write_plots_if_available(record, out_dir)  # keep curves and per-step accuracy as PNGs (needs matplotlib)
    return rec


@contextlib.contextmanager
def _ram_tempdir():
    """Put every temporary file of the run (ours and ORT's quantizer's) in /dev/shm when it exists.

    The sensitivity sweep writes one quantized copy of the graph per layer; on disk that dominated the run.
    """
    old = tempfile.tempdir
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        tempfile.tempdir = "/dev/shm"
    try:
        yield
    finally:
        tempfile.tempdir = old


def _record_head(cfg: CalibrationConfig, imgs: D.ImageSet) -> dict:
    return {
        "tool": f"onnxruntime.quantization {onnxruntime.__version__} (quantize_static, QDQ, per-channel symmetric "
        "S8 weights)",
        "method": cfg.method
        + {
            "percentile": f" ({qdq.PERCENTILE}th of |x|, {qdq.NUM_BINS} bins)",
            "entropy": f" (KL, {qdq.NUM_BINS} bins, 128 quantized bins)",
        }.get(cfg.method, ""),
        "op_types": list(qdq.OP_TYPES),
        "data": {
            "source": imgs.source,
            "count": int(len(imgs.calib)),
            "held_out": int(len(imgs.held_out)),
            "loop_steps": cfg.steps,
            "loop_aware": True,
            "feeds_per_graph": int(len(imgs.calib) * cfg.steps),
        },
        "keep_rule": _rule_text(cfg),
        "ship_bar": dict(SHIP_BAR, rule="every step on the held-out images (the FP16 loop's tolerance)"),
        "encodings": {
            "cpu": "U8 asymmetric activations (ORT CPU / VNNI)",
            "trt": "S8 symmetric activations, FP32 bias (TensorRT explicit quantization)",
        },
        "graphs": {},
        "kept_layers": {},
        "sensitivity": {},
        "keep_curve": {},
        "accuracy": {},
        "not_shipped": {},
        "meets_ship_bar": {},
        # INT8 accuracy depends on the CPU's kernels (VNNI / AMX, Intel vs AMD): `precision="auto"` trusts it only
        # on the CPU it was measured on
        "measured_on": dict(machine_record(), onnxruntime=onnxruntime.__version__),
    }


def _rule_text(cfg: CalibrationConfig) -> str:
    how = (
        f"top layers summing to {cfg.keep_share:.0%} of the total"
        if cfg.keep_rule == "share"
        else f"fewest top layers whose all-but-kept loop meets {S.BAR_MARGIN:g}x the ship bar's rel-L2 on those images"
    )
    swept = (
        f"per-layer loop sensitivity (worst latent rel-L2 over {cfg.sensitivity_steps or cfg.steps} steps, "
        f"emulated Q/DQ) on {cfg.sensitivity_images} calibration image(s); keep in FP32 the {how}, at most "
        f"{cfg.max_keep_frac:.0%} of the layers (rule {cfg.keep_rule!r})"
    )
    if cfg.kept is None:
        return swept
    given = [g for g in cfg.graphs if g in cfg.kept]  # the sweep runs for a graph the explicit dict does not name
    rest = [g for g in cfg.graphs if g not in cfg.kept]
    text = f"explicit kept layers for {', '.join(given) or 'no graph'} (no sensitivity sweep)"
    return text + (f"; {', '.join(rest)}: {swept}" if rest else "")


def _calibrate_graph(run: _Run, graph: str, other: dict[str, Path], rec: dict) -> dict[str, Path]:
    """Ranges, kept layers, both encodings and held-out accuracy for one graph (``other``: INT8 graphs in use)."""
    cfg = run.cfg
    ranges = run.ranges(graph)
    if cfg.kept is not None and graph in cfg.kept:
        kept, sens = list(cfg.kept[graph]), {}
    else:
        sweep = run.sweep(graph, ranges)
        sens, curve = sweep.single, sweep.curve
        kept = S.kept_by_rule(sweep, cfg.keep_rule, cfg.keep_share, cfg.max_keep_frac, SHIP_BAR)
        S.write_table(run.tmp / f"{graph}.sensitivity.tsv", sens, kept)
        rec["keep_curve"][graph] = curve
    paths = {e: run.quantized(graph, ranges, e, exclude=kept) for e in qdq.ENCODINGS}
    acc = {
        e: step_accuracy(run.ref_hold, run.loop(run.imgs.held_out, dict(other, **{graph: p}))) for e, p in paths.items()
    }
    label = "+".join(list(other) + [graph])
    rec["accuracy"][label] = acc
    if cfg.compare_step1:
        r1 = run.ranges(graph, steps=(1,), tag=".step1")
        p1 = run.quantized(graph, r1, "cpu", exclude=kept, name=f"{graph}.step1.onnx")
        rec["accuracy"][label + " (step-1-only calibration)"] = {
            "cpu": step_accuracy(run.ref_hold, run.loop(run.imgs.held_out, dict(other, **{graph: p1})))
        }
    rec["kept_layers"][graph] = kept
    rec["sensitivity"][graph] = {"layers": len(sens) or None, "top": sorted(sens.items(), key=lambda kv: -kv[1])[:8]}
    if graph == "synthesis" and not meets_bar(acc["cpu"]):
        rec["not_shipped"][graph] = f"held-out accuracy misses the ship bar {SHIP_BAR} (see accuracy[{label!r}])"
        log.warning("INT8 synthesis not shipped: %s", rec["not_shipped"][graph])
        return paths
    rec["graphs"][graph] = {e: {"file": f"{INT8_DIR}/{p.name}"} for e, p in paths.items()}
    rec["meets_ship_bar"][graph] = meets_bar(acc["cpu"])
    return paths


def _move_graph(src: Path, out_dir: Path) -> dict:
    shutil.copy(src, out_dir / src.name)
    info = {"sha256": A.sha256_file(out_dir / src.name)}
    data = Path(str(src) + ".data")
    if data.exists():
        shutil.copy(data, out_dir / data.name)
    return info
