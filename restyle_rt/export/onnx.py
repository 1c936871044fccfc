"""Export an official checkpoint to the artifacts directory, validated against torch before it is written as done.

Steps: load + validate the checkpoint; build both graphs in the export formulation; trace each to ONNX (dynamic
batch axis, names from :mod:`restyle_rt.spec`); clean (onnxslim constant folding); ``onnx.checker``; run ONNX Runtime
CPU against the torch modules on seeded inputs, and the export formulation against the official one; write the
report into the manifest. Any tolerance exceeded -> :class:`ParityError` and no artifacts directory.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..artifacts import (
    AVG_FEEDBACK,
    FORMAT,
    FORMAT_VERSION,
    LATENT_AVG,
    check_replaceable,
    graph_file,
    seed_records,
    sha256_file,
    staging_dir,
    write_manifest,
)
from ..errors import ParityError
from ..parity import check
from ..progress import bar as progress_bar
from ..spec import BATCH, BatchProfile
from .checkpoint import load_checkpoint
from .fixtures import sample_images
from .reference import TorchModels

log = logging.getLogger("restyle_rt")
DEFAULT_OPSET = 17
VALIDATION_BATCH = 2


def _trace(
    module: torch.nn.Module, args: tuple, path: Path, graph: str, spec, opset: int, custom_nodes: bool = False
) -> None:
    ins, outs = spec.graph_io(graph)
    dyn = {t.name: {i: BATCH for i, d in enumerate(t.shape) if d == BATCH} for t in ins + outs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings / legacy-exporter deprecation notice
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[t.name for t in ins],
            output_names=[t.name for t in outs],
            dynamic_axes=dyn,
            autograd_inlining=not custom_nodes,
        )


def _clean(path: Path, spec, graph: str, metadata: dict[str, str]) -> None:
    """Constant-fold / simplify with onnxslim when it is installed, stamp metadata, and run onnx.checker."""
    import onnx

    model = onnx.load(str(path))
    try:
        import onnxslim

        model = onnxslim.slim(model)
    except ImportError:
        log.info("onnxslim not installed; keeping the exporter's constant folding only")
    del model.metadata_props[:]
    for k, v in metadata.items():
        model.metadata_props.add(key=k, value=v)
    model.doc_string = f"restyle-rt {graph} graph ({spec.encoder_type} @ {spec.output_size})"
    save_with_external_data(model, path)
    onnx.checker.check_model(str(path), full_check=True)


def data_file(path: Path) -> Path:
    """The external-data file next to an ONNX graph: ``encoder.onnx`` -> ``encoder.onnx.data``."""
    return path.with_name(path.name + ".data")


def save_with_external_data(model, path: Path) -> None:
    """Weights go to ``<graph>.onnx.data``: ONNX Runtime maps them instead of copying them out of the protobuf
    (church-256 runtime peak: 2.29x -> 1.43x the weights), and graphs over 2 GB stay valid protobufs."""
    import onnx

    if data_file(path).exists():
        data_file(path).unlink()
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_file(path).name,
        size_threshold=1024,
    )


def _seeded_inputs(models: TorchModels, y0: torch.Tensor, seed: int = 1234):
    g = torch.Generator().manual_seed(seed)
    spec = models.ckpt.spec
    b = VALIDATION_BATCH
    image = sample_images(b, spec.input_hw, g)  # [B, 3, H, W]
    feedback = y0[None] + 0.1 * torch.randn(b, *y0.shape, generator=g)  # [B, 3, H, W]
    latent = models.ckpt.latent_avg[None] + 0.3 * torch.randn(b, spec.n_styles, 512, generator=g)
    return image, feedback, latent


def _ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@torch.no_grad()
def validate(models: TorchModels, root: Path, inputs: tuple) -> dict:
    """Parity report for both graphs: ORT vs torch export modules, export vs official formulation (torch).

    ``inputs`` = (image, feedback, latent), the seeded batch the graphs were traced with (``_seeded_inputs``).
    """
    image, feedback, latent = inputs
    report = {}
    lat = latent.numpy()

    def outs(latent_next: np.ndarray) -> dict:
        # latent_next = latent + E(x, y): the residual is bounded on its own too, so a small encoder error cannot
        # hide behind the (larger) latent it is added to
        return {"latent_next": latent_next, "residual": latent_next - lat}

    ref_e = outs(models.encoder(image, feedback, latent).numpy())
    off_e = outs(models.encoder_official(image, feedback, latent).numpy())
    ort_e = _ort_session(root / graph_file("encoder")).run(
        None, {"image": image.numpy(), "feedback": feedback.numpy(), "latent": lat}
    )
    report["encoder"] = {
        "ort": check("ort", "fp32", outs(ort_e[0]), ref_e),
        "export-vs-official": check("export-vs-official", "fp32", ref_e, off_e),
    }
    img, fb = models.synthesis(latent)
    img_o, fb_o = models.synthesis_official(latent)
    ort_s = _ort_session(root / graph_file("synthesis")).run(None, {"latent": latent.numpy()})
    report["synthesis"] = {
        "ort": check(
            "ort", "fp32", {"image": ort_s[0], "feedback": ort_s[1]}, {"image": img.numpy(), "feedback": fb.numpy()}
        ),
        "export-vs-official": check(
            "export-vs-official",
            "fp32",
            {"image": img.numpy(), "feedback": fb.numpy()},
            {"image": img_o.numpy(), "feedback": fb_o.numpy()},
        ),
    }
    report["inputs"] = {"batch": VALIDATION_BATCH, "seed": 1234}
    return report


def export_artifacts(
    checkpoint: os.PathLike,
    out_dir: os.PathLike,
    opset: int = DEFAULT_OPSET,
    max_batch: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    plugin_variant: bool = False,
) -> Path:
    """Export ``checkpoint`` into the artifacts directory ``out_dir`` (see :mod:`restyle_rt.artifacts`).

    Args:
        checkpoint: an official ReStyle ``.pt``.
        out_dir: destination; written atomically (a failed export leaves nothing behind).
        opset: ONNX opset.
        max_batch: the batch profile's max (recorded; ORT accepts any batch, TensorRT builds to it).
        overwrite: replace an existing non-empty ``out_dir``.
        progress: show a progress bar on stderr.
        plugin_variant: also write ``synthesis.plugin.onnx``, whose modulated convs are ``ModulatedConv2d``
            nodes for the TensorRT plugin (restyle_rt/kernels). Recorded under ``manifest["variants"]``; the
            portable graph stays the default until the plugin is measured faster on a GPU.

    Returns:
        The artifacts directory.

    Raises:
        CheckpointError: the checkpoint is not usable. ParityError: a graph disagrees with torch.
    """
    t0 = time.perf_counter()
    bar = progress_bar(total=6, desc="export", show=progress, unit="step", leave=False)
    try:
        return _export(checkpoint, out_dir, opset, max_batch, overwrite, bar, t0, plugin_variant)
    finally:
        bar.close()


def _export(checkpoint, out_dir, opset, max_batch, overwrite, bar, t0, plugin_variant) -> Path:
    check_replaceable(out_dir, overwrite, protect=[checkpoint])  # before minutes of work, and never the input
    bar.set_postfix_str("load checkpoint")
    ckpt = load_checkpoint(checkpoint)
    models = TorchModels.from_checkpoint(ckpt)
    spec = ckpt.spec
    bar.update()
    with staging_dir(out_dir, overwrite=overwrite, protect=[checkpoint]) as tmp:
        bar.set_postfix_str("avg feedback")
        y0 = models.avg_feedback()  # [3, H, W]
        np.save(tmp / LATENT_AVG, ckpt.latent_avg.numpy().astype(np.float32))
        np.save(tmp / AVG_FEEDBACK, y0.numpy().astype(np.float32))
        bar.update()
        image, feedback, latent = _seeded_inputs(models, y0)
        bar.set_postfix_str("export encoder")
        _trace(models.encoder, (image, feedback, latent), tmp / graph_file("encoder"), "encoder", spec, opset)
        bar.update()
        bar.set_postfix_str("export synthesis")
        _trace(models.synthesis, (latent,), tmp / graph_file("synthesis"), "synthesis", spec, opset)
        bar.update()
        bar.set_postfix_str("clean + check")
        meta = {
            "restyle_rt.version": __version__,
            "restyle_rt.encoder_type": spec.encoder_type,
            "restyle_rt.output_size": str(spec.output_size),
            "restyle_rt.source_sha256": ckpt.sha256,
        }
        for g in ("encoder", "synthesis"):
            _clean(tmp / graph_file(g), spec, g, dict(meta, **{"restyle_rt.graph": g}))
        bar.update()
        bar.set_postfix_str("validate")
        report = validate(models, tmp, (image, feedback, latent))
        bar.update()
        manifest = _manifest(ckpt, spec, tmp, opset, max_batch, report, time.perf_counter() - t0)
        if plugin_variant:
            manifest["variants"]["synthesis.plugin"] = _plugin_variant(models, tmp, latent, opset)
        write_manifest(tmp, manifest)
    log.info("exported %s -> %s in %.1f s", Path(checkpoint).name, out_dir, time.perf_counter() - t0)
    return Path(out_dir)


def tool_versions() -> dict[str, str | None]:
    """What made the graphs, for the manifest: onnxslim rewrites them (None: not installed, so not slimmed)."""
    import onnx
    import onnxruntime

    try:
        import onnxslim

        slim = getattr(onnxslim, "__version__", None) or importlib.metadata.version("onnxslim")
    except (ImportError, importlib.metadata.PackageNotFoundError):
        slim = None
    return {
        "restyle_rt": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxslim": slim,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _manifest(ckpt, spec, root: Path, opset: int, max_batch: int, report: dict, seconds: float) -> dict:
    graphs = {}
    for g in ("encoder", "synthesis"):
        ins, outs = spec.graph_io(g)
        data = data_file(root / graph_file(g))
        graphs[g] = {
            "file": graph_file(g),
            "sha256": sha256_file(root / graph_file(g)),
            "data_file": data.name,
            "data_sha256": sha256_file(data),
            "bytes": (root / graph_file(g)).stat().st_size + data.stat().st_size,
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in ins],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in outs],
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "source": {
            "checkpoint": ckpt.path.name,
            "sha256": ckpt.sha256,
            "latent_avg_shape": list(ckpt.latent_avg_shape),
            "fit": ckpt.opts.get("restyle_rt_fit"),
        },  # a fitted fixture (export/fit.py): its record
        "precision": "fp32",
        "opset": opset,
        "batch_profile": BatchProfile(1, 1, max_batch).to_list(),
        "graphs": graphs,
        "seeds": seed_records(root),
        "parity": report,
        "versions": tool_versions(),
        "export_seconds": round(seconds, 2),
        "modconv": {
            "default": "portable",
            "why": "the fused ModulatedConv2d plugin has not been measured faster on a GPU yet",
        },
        "variants": {},
        "engines": [],
    }


PLUGIN_FILE = "synthesis.plugin.onnx"


@torch.no_grad()
def _plugin_variant(models: TorchModels, root: Path, latent: torch.Tensor, opset: int) -> dict:
    """Trace the synthesis graph with ``ModulatedConv2d`` custom nodes (TensorRT plugin) and describe it.

    ONNX Runtime and onnx.checker do not know the custom op, so this graph is checked structurally here
    (node count and attributes) and numerically through its torch forward, which runs the kernels' reference.
    """
    import onnx

    from .graphs import SynthesisGraph

    spec, gen = models.ckpt.spec, models.synthesis_official.net
    plugged = SynthesisGraph(gen, spec, plugin=True).eval()
    ref, got = models.synthesis(latent)[0], plugged(latent)[0]
    rel = float((got - ref).norm() / ref.norm())
    if rel > 1e-5:
        raise ParityError(f"plugin-node synthesis (torch reference of the fused op) vs portable: rel-L2 {rel:.3g}")
    _trace(plugged, (latent,), root / PLUGIN_FILE, "synthesis", spec, opset, custom_nodes=True)
    model = onnx.load(str(root / PLUGIN_FILE))
    save_with_external_data(model, root / PLUGIN_FILE)
    nodes = [n for n in model.graph.node if n.op_type == "ModulatedConv2d"]
    want = len(plugged.net.convs) + len(plugged.net.rgbs)
    if len(nodes) != want:
        raise ParityError(f"{PLUGIN_FILE}: {len(nodes)} ModulatedConv2d nodes, expected {want}")
    return {
        "file": PLUGIN_FILE,
        "sha256": sha256_file(root / PLUGIN_FILE),
        "data_file": data_file(root / PLUGIN_FILE).name,
        "graph": "synthesis",
        "custom_op": "ModulatedConv2d",
        "plugin_version": "1",
        "nodes": len(nodes),
        "torch_reference_rel_l2": rel,
    }


__all__ = ["export_artifacts", "validate", "DEFAULT_OPSET"]
