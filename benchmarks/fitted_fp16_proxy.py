"""FP16 accuracy on a fitted preset, per loop step, against the FP32 loop and against the known answers.

Usage::

    python3 benchmarks/fitted_fp16_proxy.py [--preset church-256] [--batch 4] [--iters 5] [--out OUT.json]

FP16 engines need a GPU; the *proxy* runs the FP16 graphs the engine builder derives
(:func:`restyle_rt.export.fp16.export_fp16`) in ONNX Runtime on the CPU, through the runtime's own loop, on images
the fitted preset's generator draws from known latents (:func:`restyle_rt.bench.accuracy.fitted_targets`). Each
step: latent rel-L2 and image PSNR against the FP32 loop (ORT), PSNR against the target and latent RMS to the
truth for both, and the ship bar (:mod:`restyle_rt.parity`) on the last step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="church-256")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from restyle_rt.artifacts import load
    from restyle_rt.bench.accuracy import Steps, agreement, fitted_targets
    from restyle_rt.bench.presets import ensure_preset
    from restyle_rt.export.fp16 import fp16_artifacts
    from restyle_rt.runtime.backends import get_backend
    from restyle_rt.runtime.hostinfo import machine_record

    ckpt, art_dir = ensure_preset(args.preset, progress=False, fitted=True)
    art32 = load(art_dir)
    x, truth = fitted_targets(str(ckpt), args.batch, art32.spec.input_hw)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = fp16_artifacts(art_dir, tmp)
        runs = {}
        for label, art in (("ort fp32", art32), ("ort fp16 graphs (proxy)", load(tmp))):
            with get_backend("ort", art) as be:
                r = be.run_loop(x, args.iters, return_steps=True)
            runs[label] = Steps(label, r.step_latents, r.step_images)
    acc = agreement(runs["ort fp32"], runs["ort fp16 graphs (proxy)"], args.iters, truth)
    rec = {
        "what": "FP16 proxy (FP16 graphs in ONNX Runtime CPU) on the fitted preset vs the FP32 loop and the truth",
        "command": " ".join(["python3"] + sys.argv),
        "preset": args.preset,
        "fitted": True,
        "batch": args.batch,
        "iters": args.iters,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_record(),
        "accuracy": acc,
    }
    print(json.dumps(acc, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(rec, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
