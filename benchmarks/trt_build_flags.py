"""What ``BuilderFlag.REQUIRE_USER_ALLOCATION`` costs a TensorRT-RTX ahead-of-time build: time and plan size.

Usage::

    python benchmarks/trt_build_flags.py ARTIFACTS [--precision fp16] [--repeat 2] [--out JSON]

For each graph, builds with the flag and without it, interleaved (A, B, A, B, ...) in one process so that machine
load hits both alike, and records per-build seconds and plan bytes plus the median ratio. The "without" build exists
only here: the product refuses it (restyle_rt/engine/settings.py). Needs only TensorRT-RTX (no GPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build(builder, onnx_path, art, graph, ccs, keep, flag_on: bool):
    trt = builder.trt
    network, _parser = builder._network(onnx_path)
    config, _profile = builder._config(network, art.spec, graph, ccs, keep)
    if not flag_on:
        config.clear_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)
    t0 = time.perf_counter()
    plan = builder.builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        raise SystemExit(f"{graph} build failed (flag {'on' if flag_on else 'off'}): {builder.logger.errors[-3:]}")
    return {"seconds": round(seconds, 2), "bytes": int(plan.nbytes)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trt_build_flags.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from restyle_rt import artifacts
    from restyle_rt.bench.runner import machine_info
    from restyle_rt.engine import builder as B
    from restyle_rt.runtime.trt_compat import load_trt

    info = load_trt("tensorrt-rtx")
    art = artifacts.load(args.artifacts)
    builder = B.EngineBuilder(info, B.BuildOptions(args.precision, art.profile, 1.0))
    ccs = builder.target_ccs(None)
    result = {
        "benchmark": "trt_build_flags",
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "note": args.note,
        "machine": dict(machine_info(threads=2), gpu="none (AOT build on CPU)"),
        "trt": {"flavour": info.flavour, "version": info.version},
        "precision": args.precision,
        "targets": ccs,
        "spec": {"input_hw": art.spec.input_hw, "image_hw": art.spec.image_hw, "n_styles": art.spec.n_styles},
        "graphs": {},
    }
    for graph in ("encoder", "synthesis"):
        onnx_path, keep = B._onnx_for(art, graph, args.precision, builder.strongly_typed)
        runs = {"with_flag": [], "without_flag": []}
        for _ in range(args.repeat):
            runs["with_flag"].append(_build(builder, onnx_path, art, graph, ccs, keep, True))
            runs["without_flag"].append(_build(builder, onnx_path, art, graph, ccs, keep, False))
        med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        result["graphs"][graph] = dict(
            runs,
            seconds_ratio_with_over_without=round(med["with_flag"] / med["without_flag"], 3),
            bytes_difference=runs["with_flag"][0]["bytes"] - runs["without_flag"][0]["bytes"],
        )
        print(graph, json.dumps(result["graphs"][graph]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
