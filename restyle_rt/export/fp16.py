"""FP16 ONNX graphs derived from the FP32 export, with a clear keep-in-FP32 rule, and their ORT *proxy* parity.

Every tensor gets one precision, decided by its producer; one shared Cast is inserted where a consumer needs the
other one. Graph inputs and outputs stay FP32 (casts live inside). The nodes kept in FP32 are those of
:func:`keep_fp32_nodes`; everything else that computes in float becomes FP16. Initializers used only by FP16 nodes are
stored as FP16 (clipped to +-65504); one used by both precisions is duplicated. Why a pass of its own rather than
onnxconverter-common's converter: docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .. import fsio
from ..parity import TOLERANCES, Report, Tolerance, compare

log = logging.getLogger("restyle_rt")

KEEP_FP32_OPS = frozenset(
    {
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "LpNormalization",
        "MeanVarianceNormalization",
        "ReduceSumSquare",
        "ReduceL2",
    }
)
ANCHOR_OPS = frozenset({"Sqrt", "Reciprocal"})
STOP_OPS = frozenset({"Conv", "ConvTranspose"})  # activation convolutions: the closure never enters them
SHAPE_OPS = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose", "Tile"})
RESCALE_OPS = frozenset({"Div", "Mul", "Reciprocal"}) | SHAPE_OPS
SHAPE_ONLY_INPUT_OPS = frozenset({"Shape", "Size"})  # read only the shape of their input: never cast it
NON_DATA_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}  # (op, input index) that stay in their own dtype
LATENT_INPUT, LATENT_OUTPUT = "latent", "latent_next"

FP16_SUFFIX = "__fp16"
FP16_MAX = 65504.0

# The FP16 entries of the one tolerance table (parity.TOLERANCES, kind "ort-fp16-proxy": ORT CPU, <graph>.fp16.onnx
# vs <graph>.onnx, one call; a proxy for TensorRT FP16). How they were measured: benchmarks/README.md.
FP16_TOLERANCES: dict[tuple, Tolerance] = {k: v for k, v in TOLERANCES.items() if k[1] == "fp16"}


def _onnx():
    import onnx  # export extra

    return onnx


def _float_tensors(model) -> dict[str, int]:
    """Element type of every tensor name (inputs, initializers, Constant outputs, inferred values)."""
    onnx = _onnx()
    TP = onnx.TensorProto
    g = model.graph
    types: dict[str, int] = {}
    if model.ByteSize() < (1 << 31) - (1 << 26):
        inferred = onnx.shape_inference.infer_shapes(model).graph
        for vi in list(inferred.value_info) + list(inferred.output) + list(inferred.input):
            types[vi.name] = vi.type.tensor_type.elem_type
    for vi in list(g.input) + list(g.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:  # fallback propagation for anything inference left unknown
        for a in node.attribute:
            if node.op_type in ("Constant", "ConstantOfShape") and a.name == "value":
                types[node.output[0]] = a.t.data_type
        if node.op_type == "Cast":
            types[node.output[0]] = next(a.i for a in node.attribute if a.name == "to")
        for o in node.output:
            if o and not types.get(o):
                if node.op_type in SHAPE_ONLY_INPUT_OPS:
                    types[o] = TP.INT64
                else:
                    ins = [types.get(i, 0) for i in node.input if i]
                    types[o] = TP.FLOAT if TP.FLOAT in ins else (ins[0] if ins else 0)
    return types


def _const_value(g, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in g.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].name == "value" else None
    return None


def _is_anchor(g, node) -> bool:
    if node.op_type in ANCHOR_OPS:
        return True
    if node.op_type == "Pow" and len(node.input) > 1:
        e = _const_value(g, node.input[1])
        return e is not None and bool(np.any((e < 0) | (e != np.round(e))))
    return False


def keep_fp32_nodes(model) -> set[str]:
    """Names of the nodes the FP16 graph computes in FP32.

    1. *Demodulation and what feeds it*: every ``Sqrt``, ``Reciprocal`` and ``Pow`` with a negative or fractional
       constant exponent is an anchor. Its ancestors are kept back to (not including) the activation convolutions
       (``Conv``/``ConvTranspose``), i.e. rsqrt(s*s @ wsq + 1e-8), the modulation ``Gemm`` and the latent slices.
       Consumers that only rescale an anchor by constants (``Div``/``Mul``/reshapes) are kept too, so the demod
       factor leaves FP32 once, at the multiply with the FP16 activations.
    2. *Normalisation with statistics*: :data:`KEEP_FP32_OPS` (inference BatchNormalization, a per-channel affine
       map with constant statistics, stays FP16 so TensorRT can fuse it into the neighbouring convolution).
    3. *Latent accumulation*: the node producing ``latent_next`` (through trailing reshapes) and every ``Add`` that
       the ``latent`` input reaches through reshapes only.
    """
    g = model.graph
    producer = {o: n for n in g.node for o in n.output if o}
    consumers = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    consts = {i.name for i in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    keep: set[str] = set()

    def closure_up(start):
        stack = [start]
        while stack:
            n = stack.pop()
            if n.name in keep or n.op_type in STOP_OPS:
                continue
            keep.add(n.name)
            stack.extend(producer[i] for i in n.input if i in producer)

    for node in g.node:
        if _is_anchor(g, node):
            closure_up(node)
            frontier = [node]
            while frontier:  # constant-only rescales of the anchor stay FP32 too
                for out in frontier.pop().output:
                    for c in consumers[out]:
                        others = [i for i in c.input if i and i != out]
                        if c.op_type in RESCALE_OPS and c.name not in keep and all(i in consts for i in others):
                            keep.add(c.name)
                            frontier.append(c)
        elif node.op_type in KEEP_FP32_OPS:
            keep.add(node.name)
    for out in (o.name for o in g.output if o.name == LATENT_OUTPUT):
        n = producer.get(out)
        while n is not None and n.op_type in SHAPE_OPS:
            keep.add(n.name)
            n = producer.get(n.input[0])
        if n is not None:
            keep.add(n.name)
    frontier = [LATENT_INPUT] if any(i.name == LATENT_INPUT for i in g.input) else []
    while frontier:
        for c in consumers[frontier.pop()]:
            if c.op_type in SHAPE_OPS or c.op_type in ("Add", "Sum"):
                if c.name not in keep:
                    keep.add(c.name)
                    if c.op_type in SHAPE_OPS:
                        frontier.extend(c.output)
    return keep


def _name_nodes(g) -> None:
    seen = set()
    for k, n in enumerate(g.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{k}_fp16pass"
        seen.add(n.name)


def convert_to_fp16(model, keep: Iterable[str] | None = None):
    """A new ModelProto computing in FP16 except the nodes in ``keep`` (default :func:`keep_fp32_nodes`).

    Graph inputs and outputs keep their FP32 types; Casts are inserted inside the graph.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper

    TP = onnx.TensorProto
    model = onnx.ModelProto.FromString(model.SerializeToString()) if model.ByteSize() < (1 << 31) else model
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise ValueError("convert_to_fp16 does not handle control-flow subgraphs (If/Loop/Scan)")
    _name_nodes(g)
    keep = set(keep_fp32_nodes(model) if keep is None else keep)
    types = _float_tensors(model)
    F = TP.FLOAT
    half = {
        n.name
        for n in g.node
        if n.name not in keep
        and n.op_type != "Constant"
        and any(types.get(t) == F for t in list(n.input) + list(n.output) if t)
    }
    now: dict[str, int] = {i.name: F for i in g.input}  # tensor -> dtype it has in the new graph
    inits = {i.name: i for i in g.initializer if i.data_type == F}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and types.get(n.output[0]) == F}
    init_uses = defaultdict(list)  # initializer -> [(node, index, want)]
    casts: dict[tuple, str] = {}
    out_names = {o.name for o in g.output}
    new_nodes = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == TP.FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=casts[key] + "_cast"))
        return casts[key]

    for node in g.node:
        is_half = node.name in half
        want = TP.FLOAT16 if is_half else F
        if node.op_type == "Constant" and node.output[0] in const_nodes:
            continue  # re-emitted below, as an initializer
        if node.op_type not in ("Cast", *SHAPE_ONLY_INPUT_OPS):
            for k, name in enumerate(node.input):
                if not name or types.get(name) != F or k in NON_DATA_INPUTS.get(node.op_type, ()):
                    continue
                if name in inits or name in const_nodes:
                    init_uses[name].append((node, k, want))
                elif now.get(name, F) != want:
                    node.input[k] = cast(name, want)
        if is_half:
            for a in node.attribute:
                if node.op_type == "Cast" and a.name == "to" and a.i == F:
                    a.i = TP.FLOAT16
                if node.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == F:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        for o in node.output:
            if o:
                now[o] = TP.FLOAT16 if (is_half and types.get(o) == F) else types.get(o, 0)
        new_nodes.append(node)

    new_inits = [i for i in g.initializer if i.name not in inits]
    for name in list(inits) + list(const_nodes):
        proto = inits[name] if name in inits else const_nodes[name].attribute[0].t
        arr = numpy_helper.to_array(proto)
        wants = {w for _, _, w in init_uses[name]} or {F}
        if F in wants:
            new_inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        if TP.FLOAT16 in wants:
            h_name = name if wants == {TP.FLOAT16} else name + FP16_SUFFIX
            new_inits.append(numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), h_name))
            for node, k, w in init_uses[name]:
                if w == TP.FLOAT16:
                    node.input[k] = h_name
    for o in g.output:  # graph outputs stay FP32
        if now.get(o.name) == TP.FLOAT16:
            inner = o.name + FP16_SUFFIX
            for n in new_nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            new_nodes.append(helper.make_node("Cast", [inner], [o.name], to=F, name=o.name + "_output_cast"))
    assert not (out_names - {n for node in new_nodes for n in node.output})
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    del g.value_info[:]
    log.debug("fp16 pass: %d nodes fp16, %d kept fp32, %d casts", len(half), len(keep), len(casts))
    return model


def export_fp16(src: os.PathLike, dst: os.PathLike) -> Path:
    """Write the FP16 graph of ``src`` (an FP32 ``<graph>.onnx``) to ``dst``; checked with the ONNX checker."""
    onnx = _onnx()
    m = convert_to_fp16(onnx.load(str(src)))
    dst = Path(dst)
    big = m.ByteSize() > (1 << 31) - (1 << 26)
    with fsio.atomic_path(dst, durable=True) as tmp:  # the one atomic writer: no partial graph on failure
        onnx.save(m, str(tmp), save_as_external_data=big, location=dst.name + ".data" if big else None)
        onnx.checker.check_model(str(tmp))
    return dst


def random_feeds(spec, graph: str, batch: int = 2, seed: int = 0, latent_avg=None) -> dict[str, np.ndarray]:
    """Inputs in the graphs' working ranges: images in [-1, 1], latents around ``latent_avg`` (if given)."""
    rng = np.random.default_rng(seed)
    ins, _ = spec.graph_io(graph)
    feeds = {}
    for t in ins:
        shape = t.concrete(batch)
        if t.name == "latent":
            base = 0.0 if latent_avg is None else np.asarray(latent_avg, np.float32)[None]
            feeds[t.name] = (base + 0.5 * rng.standard_normal(shape)).astype(np.float32)
        else:
            feeds[t.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def proxy_parity(fp32_path: os.PathLike, fp16_path: os.PathLike, feeds: Mapping[str, np.ndarray]) -> dict[str, Report]:
    """FP16 *proxy* parity: ONNX Runtime CPU runs both graphs on ``feeds``; per-output report of FP16 vs FP32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    outs = []
    for p in (fp32_path, fp16_path):
        sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outs.append(dict(zip(names, sess.run(None, dict(feeds)))))
    reports = {k: compare(outs[1][k], outs[0][k]) for k in outs[0]}
    for k, r in reports.items():
        log.info(
            "FP16 proxy parity (ORT CPU, %s vs %s) %s: rel-L2 %.3g, PSNR %.1f dB, max-abs %.3g",
            Path(fp16_path).name,
            Path(fp32_path).name,
            k,
            r.rel_l2,
            r.psnr_db,
            r.max_abs,
        )
    return reports


def fp16_artifacts(artifacts_dir: os.PathLike, out_dir: os.PathLike) -> Path:
    """Write into ``out_dir`` an artifacts directory whose graphs are the FP16 graphs of ``artifacts_dir``'s (the
    manifest copied, pointing at them, their hashes dropped; the loop seeds copied), so the runtime's own loop runs
    them unchanged. Returns ``out_dir``."""
    import json
    import shutil

    from ..artifacts import MANIFEST, load

    src, out = Path(artifacts_dir), Path(out_dir)
    art32 = load(src)
    manifest = json.loads((src / MANIFEST).read_text())
    for g in ("encoder", "synthesis"):
        export_fp16(art32.graph_path(g), out / f"{g}.fp16.onnx")
        manifest["graphs"][g] = dict(manifest["graphs"][g], file=f"{g}.fp16.onnx")
        for k in ("sha256", "data_file", "data_sha256"):
            manifest["graphs"][g].pop(k, None)
    for name in ("latent_avg.npy", "avg_feedback.npy"):
        shutil.copy(src / name, out / name)
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def proxy_loop_parity(
    artifacts_dir: os.PathLike, images: np.ndarray, n_iters: int = 5, work_dir: os.PathLike | None = None
) -> list:
    """FP16 *proxy* parity of the whole loop, per iteration: the ORT backend on the FP16 graphs vs on the FP32 ones.

    The FP16 graphs are derived into ``work_dir`` (default: a temporary directory) next to a copy of the manifest
    that points at them, so the runtime's own loop runs unchanged on both precisions.

    Returns:
        One dict per step: latent rel-L2, image rel-L2 and image PSNR (dB) of FP16 against FP32.
    """
    import tempfile

    from ..artifacts import load
    from ..runtime.backends import get_backend

    src = Path(artifacts_dir)
    art32 = load(src)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = fp16_artifacts(src, tmp)
        results = []
        for art in (art32, load(tmp)):
            with get_backend("ort", art) as be:
                results.append(be.run_loop(images, n_iters, return_steps=True))
    ref, got = results
    steps = []
    for t in range(n_iters):
        lat = compare(got.step_latents[t], ref.step_latents[t])
        img = compare(got.step_images[t], ref.step_images[t])
        steps.append(
            {"step": t + 1, "latent_rel_l2": lat.rel_l2, "image_rel_l2": img.rel_l2, "image_psnr_db": img.psnr_db}
        )
        log.info(
            "FP16 proxy loop (ORT CPU) step %d: latent rel-L2 %.3g, image rel-L2 %.3g, PSNR %.1f dB",
            t + 1,
            lat.rel_l2,
            img.rel_l2,
            img.psnr_db,
        )
    return steps
