"""Record FP16-vs-FP32 accuracy per loop iteration, with the FP16 ONNX in ONNX Runtime CPU as the proxy.

Usage::

    python3 benchmarks/fp16_proxy_loop.py ARTIFACTS [--iters 5] [--out benchmarks/results/fp16_proxy_loop.json]

This is a *proxy*: FP16 TensorRT engines cannot run without a GPU. The FP16 graphs are the ones the engine builder
derives (restyle_rt/export/fp16.py: demodulation, statistic norms and the latent accumulation stay FP32).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/fp16_proxy_loop.json")
    args = ap.parse_args()
    import torch

    from restyle_rt.artifacts import load
    from restyle_rt.export.fixtures import sample_images
    from restyle_rt.export.fp16 import proxy_loop_parity

    spec = load(args.artifacts).spec
    x = sample_images(args.batch, spec.input_hw, torch.Generator().manual_seed(7)).numpy().astype(np.float32)
    steps = proxy_loop_parity(args.artifacts, x, args.iters)
    from restyle_rt.bench.runner import machine_info

    rec = {
        "what": "FP16 proxy (ONNX Runtime CPU, FP16 graphs vs FP32 graphs), whole loop, per iteration",
        "command": " ".join(["python3"] + sys.argv),
        "spec": spec.to_dict(),
        "batch": args.batch,
        "machine": machine_info(threads=os.cpu_count()),
        "steps": steps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(steps, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
