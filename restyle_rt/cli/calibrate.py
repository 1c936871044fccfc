"""``restyle-rt calibrate ARTIFACTS``: loop-aware INT8 calibration into ARTIFACTS/int8 (build time).

Registration imports nothing heavy; onnxruntime's quantization tools are imported when the command runs.
"""

from __future__ import annotations

from ..errors import EXIT_OK
from .args import add_artifacts


def register(subparsers) -> None:
    """Add the ``calibrate`` subcommand to ``restyle-rt``."""
    p = subparsers.add_parser(
        "calibrate",
        help="INT8 Q/DQ graphs from loop-aware calibration (ORT CPU and TensorRT encodings)",
        description="Run the FP32 loop over calibration images, collect activation ranges from every step, keep "
        "the most loop-sensitive layers in FP32, write explicit Q/DQ graphs into ARTIFACTS/int8 and "
        "record them, with their per-step accuracy on held-out images, in manifest.json.",
    )
    add_artifacts(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--images",
        metavar="DIR",
        help="folder of in-domain images (the last --held-out, sorted, are held out for accuracy)",
    )
    src.add_argument("--generated", type=int, metavar="N", help="draw N calibration images with the generator")
    p.add_argument(
        "--checkpoint",
        metavar="PT",
        help="with --generated: sample W through this checkpoint's mapping "
        "network (needs torch); without it, latent_avg + 0.5*N(0,I)",
    )
    p.add_argument("--count", type=int, default=None, metavar="N", help="use at most N images of --images")
    p.add_argument("--held-out", type=int, default=8, metavar="M", help="held-out images for accuracy (default 8)")
    p.add_argument("--steps", type=int, default=5, metavar="T", help="loop steps to calibrate on (default 5)")
    p.add_argument(
        "--method",
        choices=("entropy", "percentile", "minmax"),
        default="entropy",
        help="activation range calibrator (default entropy)",
    )
    p.add_argument("--encoder-only", action="store_true", help="do not try an INT8 synthesis graph")
    p.add_argument(
        "--sensitivity-images",
        type=int,
        default=2,
        metavar="K",
        help="calibration images the per-layer sensitivity sweep runs the loop on (default 2)",
    )
    p.add_argument(
        "--sensitivity-steps",
        type=int,
        default=None,
        metavar="T",
        help="loop steps of the sensitivity sweep (default: --steps)",
    )
    p.add_argument(
        "--keep-rule",
        choices=("share", "bar"),
        default="share",
        help="which most-sensitive layers stay FP32: 'share' (top layers summing to --keep-share of the "
        "total single-layer error) or 'bar' (fewest top layers whose measured all-but-kept loop "
        "meets the ship bar on the calibration images); both capped by --max-keep (default share)",
    )
    p.add_argument(
        "--keep-share",
        type=float,
        default=0.5,
        metavar="F",
        help="keep the most sensitive layers summing to this share of the total (default 0.5)",
    )
    p.add_argument(
        "--max-keep",
        type=float,
        default=0.1,
        metavar="F",
        help="keep at most this fraction of the quantizable layers in FP32 (default 0.1)",
    )
    p.add_argument(
        "--no-sensitivity",
        action="store_true",
        help="skip the sensitivity sweep and quantize every layer (fast; for speed measurements)",
    )
    p.add_argument(
        "--no-step1-compare", action="store_true", help="skip measuring what step-1-only calibration would give"
    )
    p.add_argument("--batch", type=int, default=4, metavar="B", help="images per graph call (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed for --generated (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Do ``calibrate``; prints a per-step accuracy summary."""
    import json

    from ..calibration.pipeline import CalibrationConfig, calibrate

    cfg = CalibrationConfig(
        images=args.images,
        generated=args.generated,
        checkpoint=args.checkpoint,
        count=args.count,
        held_out=args.held_out,
        steps=args.steps,
        method=args.method,
        graphs=("encoder",) if args.encoder_only else ("encoder", "synthesis"),
        sensitivity_images=args.sensitivity_images,
        sensitivity_steps=args.sensitivity_steps,
        keep_rule=args.keep_rule,
        keep_share=args.keep_share,
        max_keep_frac=args.max_keep,
        compare_step1=not args.no_step1_compare,
        batch=args.batch,
        seed=args.seed,
        kept={"encoder": [], "synthesis": []} if args.no_sensitivity else None,
    )
    rec = calibrate(args.artifacts, cfg)
    for label, encs in rec["accuracy"].items():
        for enc, rows in encs.items():
            cells = ", ".join(f"{r['latent_rel_l2']:.2e}/{r['image_psnr_db'] or float('inf'):.1f}dB" for r in rows)
            print(f"{label} [{enc}] per step latent rel-L2/image PSNR: {cells}")
    print(
        json.dumps(
            {"graphs": rec["graphs"], "kept_layers": rec["kept_layers"], "not_shipped": rec["not_shipped"]}, indent=1
        )
    )
    return EXIT_OK
