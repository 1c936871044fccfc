"""Speed of ORT INT8 vs ORT FP32 vs torch-official on a calibrated preset, interleaved in one process.

Usage (after ``benchmarks/int8_calibration.py PRESET`` wrote the INT8 graphs into the preset cache)::

    flock /tmp/bench.lock python3 benchmarks/int8_speed.py church-256 [--batches 1,4] [--iters 5] [--repeat 5]
        [--out benchmarks/results/int8_speed_church-256.json]

Targets: ``ort-fp32``; ``ort-int8-enc`` (INT8 encoder, FP32 synthesis); ``ort-int8`` (every graph the calibration
shipped in INT8, i.e. the synthesis too when it met the ship bar); ``torch-official`` (restyle_rt.bench.targets).
Each repeat runs every target once in turn, so load drifts hit all of them alike; per-image seconds are medians.
The accuracy recorded next to the speed is the calibration's per-step held-out accuracy from the manifest.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path


def targets(art, ckpt, threads: int) -> dict:
    from restyle_rt.bench.targets import TorchTarget
    from restyle_rt.runtime.backends.ort import OrtBackend

    int8 = art.manifest.int8
    enc_only = copy.copy(art)
    enc_only.manifest = dataclasses.replace(
        art.manifest, int8=dataclasses.replace(int8, graphs={g: v for g, v in int8.graphs.items() if g != "synthesis"})
    )
    out = {
        "ort-fp32": OrtBackend(art, threads=threads),
        "ort-int8-enc": OrtBackend(enc_only, threads=threads, precision="int8"),
    }
    if "synthesis" in int8.graphs:
        out["ort-int8"] = OrtBackend(art, threads=threads, precision="int8")
    out["torch-official"] = TorchTarget("torch-official", ckpt, threads)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--artifacts", default=None, help="a calibrated copy of the preset artifacts (default: those)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from restyle_rt import artifacts as A
    from restyle_rt.bench.presets import ensure_preset
    from restyle_rt.bench.runner import machine_info, synthetic_images
    from restyle_rt.bench.targets import default_threads

    ckpt, art_dir = ensure_preset(args.preset)
    art = A.load(args.artifacts or art_dir)
    threads = default_threads()
    tg = targets(art, ckpt, threads)
    rows = []
    for b in (int(v) for v in args.batches.split(",")):
        x = synthetic_images(b, art.spec.input_hw, seed=0)
        times = {k: [] for k in tg}
        for t in tg.values():  # warm-up
            t.run(x, args.iters, None) if hasattr(t, "kind") else t.run_loop(x, args.iters)
        for _ in range(args.repeat):
            for name, t in tg.items():
                t0 = time.perf_counter()
                t.run(x, args.iters, None) if hasattr(t, "kind") else t.run_loop(x, args.iters)
                times[name].append((time.perf_counter() - t0) / b)
        base = statistics.median(times["torch-official"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append(
                {
                    "target": name,
                    "batch": b,
                    "iters": args.iters,
                    "s_per_image": med,
                    "all_s_per_image": ts,
                    "speedup_vs_torch_official": base / med,
                    "precision": "fp32" if name in ("ort-fp32", "torch-official") else "int8",
                }
            )
            print(f"b{b} {name:15s} {med * 1e3:8.1f} ms/img  x{base / med:.2f} vs torch-official", flush=True)
    rec = art.manifest.int8.to_dict()
    doc = {
        "what": "ORT INT8 vs ORT FP32 vs torch-official, whole loop, per image (median over interleaved repeats)",
        "command": " ".join(["python3"] + sys.argv),
        "preset": args.preset,
        "machine": dict(
            machine_info(threads=threads),
            note="2-vCPU VM shared with other (niced) jobs; ratios within this run are the figure",
        ),
        "rows": rows,
        "int8_accuracy_proxy": rec["accuracy"],
        "kept_layers": rec["kept_layers"],
        "int8_graphs": {g: v["cpu"]["file"] for g, v in rec["graphs"].items()},
    }
    out = Path(args.out or f"benchmarks/results/int8_speed_{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
