"""Record loop-aware INT8 calibration of a benchmark preset: per-step accuracy vs FP32 on held-out images.

Usage::

    python3 benchmarks/int8_calibration.py church-256 [--generated 16] [--held-out 8] [--steps 5]
        [--method entropy] [--encoder-only] [--keep-rule share|bar] [--sensitivity-images 2]
        [--sensitivity-steps T] [--kept-from RESULT.json] [--artifacts DIR] [--out benchmarks/results/X.json]

Runs ``restyle_rt.calibration.calibrate`` on the preset's artifacts (written into its cache, so a later
``restyle-rt bench --precision int8`` finds the INT8 graphs; ``--artifacts DIR`` calibrates a copy instead), with
images the preset checkpoint's generator draws through its mapping network (the preset checkpoints carry it).
``--kept-from`` takes the kept layers from an earlier result instead of running the sweep. The accuracy figures
are *proxies*: the presets are random-weight models, which do not contract through the loop like trained ones
(their errors compound ~2x per step), and their generated images are not a real image distribution.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument("--artifacts", default=None, help="calibrate this artifacts dir (a copy of the preset's)")
    ap.add_argument("--generated", type=int, default=16)
    ap.add_argument("--held-out", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--method", default="entropy")
    ap.add_argument("--encoder-only", action="store_true")
    ap.add_argument("--sensitivity-images", type=int, default=2)
    ap.add_argument("--sensitivity-steps", type=int, default=None)
    ap.add_argument("--keep-rule", default="share", choices=("share", "bar"))
    ap.add_argument("--keep-share", type=float, default=0.5)
    ap.add_argument("--max-keep", type=float, default=0.1)
    ap.add_argument("--kept-from", default=None, help="a result JSON whose int8.kept_layers to use (no sweep)")
    ap.add_argument("--kept-none", action="store_true", help="quantize every layer (no sweep, nothing kept)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--note", default="", help="appended to the record's 'what'")
    ap.add_argument(
        "--machine-note",
        default="2-vCPU VM shared with other niced jobs",
        help="what else ran on the machine (recorded beside the load averages)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    from restyle_rt.bench.presets import ensure_preset
    from restyle_rt.bench.runner import machine_info
    from restyle_rt.calibration import CalibrationConfig, calibrate

    ckpt, art = ensure_preset(args.preset)
    kept = json.loads(Path(args.kept_from).read_text())["int8"]["kept_layers"] if args.kept_from else None
    if args.kept_none:
        kept = {"encoder": [], "synthesis": []}
    cfg = CalibrationConfig(
        generated=args.generated,
        checkpoint=str(ckpt),
        held_out=args.held_out,
        steps=args.steps,
        method=args.method,
        graphs=("encoder",) if args.encoder_only else ("encoder", "synthesis"),
        sensitivity_images=args.sensitivity_images,
        sensitivity_steps=args.sensitivity_steps,
        keep_rule=args.keep_rule,
        keep_share=args.keep_share,
        max_keep_frac=args.max_keep,
        kept=kept,
        batch=args.batch,
    )
    machine = dict(machine_info(threads=os.cpu_count()), note=args.machine_note)
    rec = calibrate(args.artifacts or art, cfg)
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    tables = {}  # the full per-layer sensitivity tables (the manifest keeps the top 8)
    for g in rec["sensitivity"]:
        tsv = Path(args.artifacts or art) / "int8" / f"{g}.sensitivity.tsv"
        if tsv.is_file():
            tables[g] = [
                [n, float(v), k == "1"] for n, v, k in (line.split("\t") for line in tsv.read_text().splitlines()[1:])
            ]
    out = Path(args.out or f"benchmarks/results/int8_{args.preset}.json")
    doc = {
        "what": "loop-aware INT8 calibration, per-step accuracy vs FP32 (ONNX Runtime CPU) on held-out "
        "generated images; PROXY figures (random-weight preset)" + (f"; {args.note}" if args.note else ""),
        "command": " ".join(["python3"] + sys.argv),
        "preset": args.preset,
        "artifacts": "preset cache" if args.artifacts is None else "a copy of the preset's artifacts",
        "machine": machine,
        "int8": rec,
        "sensitivity_tables": tables,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for label, encs in rec["accuracy"].items():
        for enc, rows in encs.items():
            print(
                label,
                enc,
                [(f"{r['latent_rel_l2']:.2e}", r["image_psnr_db"] and round(r["image_psnr_db"], 1)) for r in rows],
            )
    print("kept:", rec["kept_layers"], "seconds:", rec["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
