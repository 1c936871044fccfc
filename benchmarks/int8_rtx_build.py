"""Build TensorRT-RTX INT8 engines for a calibrated preset (ahead of time, no GPU) and record time, size and which
layers the Q/DQ placement makes INT8.

Usage (after ``benchmarks/int8_calibration.py PRESET``)::

    python3 benchmarks/int8_rtx_build.py church-256 [--cc 8.6] [--out benchmarks/results/int8_rtx_build_church-256.json]

"Which layers ran in INT8": the engine inspector needs a deserialized engine, i.e. a GPU, so this records the
network-level answer instead: every layer of the parsed network whose data input comes from a DequantizeLinear
(explicit quantization: TensorRT fuses Q -> DQ -> layer into an INT8 kernel when it has one). Unverified on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def int8_layers(onnx_path: Path) -> dict:
    """Layers fed by a DEQUANTIZE layer in the TensorRT network parsed from ``onnx_path``."""
    from restyle_rt.engine.builder import BuildOptions, EngineBuilder
    from restyle_rt.runtime.trt_compat import load_trt

    info = load_trt("")
    b = EngineBuilder(info, BuildOptions("int8"))
    net, _parser = b._network(onnx_path)
    trt = info.module
    producer = {}
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        for k in range(layer.num_outputs):
            producer[layer.get_output(k).name] = layer
    fed, kinds = [], {}
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        kinds[str(layer.type).split(".")[-1]] = kinds.get(str(layer.type).split(".")[-1], 0) + 1
        if layer.type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE):
            continue
        ins = [layer.get_input(k) for k in range(layer.num_inputs) if layer.get_input(k) is not None]
        if any(producer.get(t.name) is not None and producer[t.name].type == trt.LayerType.DEQUANTIZE for t in ins):
            fed.append({"layer": layer.name, "type": str(layer.type).split(".")[-1]})
    return {"layers_total": net.num_layers, "layer_types": kinds, "int8_fed_layers": len(fed), "layers": fed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument("--cc", default="8.6")
    ap.add_argument("--artifacts", default=None, help="a calibrated copy of the preset artifacts (default: those)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from restyle_rt import artifacts as A
    from restyle_rt.bench.presets import ensure_preset
    from restyle_rt.bench.runner import machine_info
    from restyle_rt.engine import build_engines

    art_dir = args.artifacts or ensure_preset(args.preset)[1]
    t0 = time.perf_counter()
    recs = build_engines(art_dir, precision="int8", compute_capabilities=args.cc.split(","), rebuild=True)
    total = time.perf_counter() - t0
    layers = {r.graph: int8_layers(Path(art_dir) / r.onnx.file) for r in recs}
    doc = {
        "what": "TensorRT-RTX INT8 engine build (explicit quantization, FP16 elsewhere, strongly typed), "
        "ahead of time on a CPU-only VM; engines not executed (no GPU)",
        "command": " ".join(["python3"] + sys.argv),
        "preset": args.preset,
        "machine": dict(machine_info(threads=2), note="2-vCPU VM shared with other (niced) jobs"),
        "engines": [r.to_dict() for r in recs],
        "seconds_total": round(total, 1),
        "network_int8": layers,
        "int8_graphs": A.load(art_dir).manifest.int8.to_dict()["graphs"],
    }
    out = Path(args.out or f"benchmarks/results/int8_rtx_build_{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for r in recs:
        print(
            r.graph,
            r.onnx.file,
            r.size_bytes,
            "bytes",
            r.build_seconds,
            "s",
            layers[r.graph]["int8_fed_layers"],
            "INT8-fed layers",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
