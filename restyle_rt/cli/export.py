"""`restyle-rt export` and `restyle-rt make-checkpoint` (registration imports nothing heavy)."""

from __future__ import annotations

import argparse

from ..errors import EXIT_OK
from .args import add_out_dir, positive_int

# what `export` accepts (kept in step with export.checkpoint, which cannot be imported here: it imports torch)
ENCODER_TYPES = (
    "BackboneEncoder",
    "ResNetBackboneEncoder",
    "ProgressiveBackboneEncoder",
    "ResNetProgressiveBackboneEncoder",
    "GradualStyleEncoder",
    "ResNetGradualStyleEncoder",
)
OUTPUT_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)


def register(subparsers) -> None:
    """Add ``export`` and ``make-checkpoint`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "export",
        help="official checkpoint -> validated ONNX artifacts dir",
        description="Export an official ReStyle checkpoint (.pt) into encoder.onnx + "
        "synthesis.onnx + loop seeds + manifest, validated against PyTorch before "
        "it is written.",
    )
    p.add_argument("checkpoint", help="official ReStyle checkpoint (pSp or e4e)")
    add_out_dir(p, help="artifacts directory to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="batch profile max (default 8)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out when it holds a previous export (never any other directory, the current "
        "directory, or one holding the checkpoint)",
    )
    p.add_argument(
        "--plugin-variant",
        action="store_true",
        help="also write synthesis.plugin.onnx with ModulatedConv2d nodes for the TensorRT plugin",
    )
    p.set_defaults(func=run_export)

    m = subparsers.add_parser(
        "make-checkpoint",
        help="random-weight model in the official checkpoint format",
        description="Write a random-weight ReStyle checkpoint in the exact official format "
        "(for tests, demos and benchmarks; the weights are meaningless).",
    )
    m.add_argument("out", help="path of the .pt to write")
    m.add_argument("--preset", choices=("ffhq-1024", "cars-512", "church-256"), help="official architecture")
    m.add_argument("--encoder-type", default="BackboneEncoder", choices=ENCODER_TYPES)
    m.add_argument("--dataset-type", default="ffhq_encode")
    m.add_argument("--output-size", type=int, default=64, choices=OUTPUT_SIZES, metavar="{8,16,...,1024}")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument(
        "--fit",
        action="store_true",
        help="fit the encoder so the loop converges on images its own (random) generator draws "
        "(restyle_rt.export.fit; ResNet34 / IR-SE50 encoders without a feature pyramid; minutes at 64 px); "
        "a fixture, not a photo model",
    )
    m.set_defaults(func=run_make_checkpoint)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..artifacts import check_replaceable
    from ..errors import InputError

    if not Path(args.checkpoint).is_file():
        raise InputError(f"{args.checkpoint}: no such file (expected an official ReStyle checkpoint .pt)")
    check_replaceable(args.out, args.force, protect=[args.checkpoint])  # before torch is even imported

    from ..export.onnx import export_artifacts

    out = export_artifacts(
        args.checkpoint,
        args.out,
        opset=args.opset,
        max_batch=args.max_batch,
        overwrite=args.force,
        progress=not getattr(args, "no_progress", False),
        plugin_variant=args.plugin_variant,
    )
    print(f"wrote {out}")
    return EXIT_OK


def run_make_checkpoint(args: argparse.Namespace) -> int:
    from ..fsio import check_writable_file

    check_writable_file(args.out, "make-checkpoint OUT")
    from ..export.fixtures import PRESETS, make_checkpoint

    et, dt, size = PRESETS[args.preset] if args.preset else (args.encoder_type, args.dataset_type, args.output_size)
    if args.fit:
        from ..export.fit import PRESET_FIT, SUPPORTED, fit_encoder

        if et not in SUPPORTED:
            from ..errors import InputError

            raise InputError(
                f"make-checkpoint --fit: encoder type {et} is not supported (fits: {', '.join(SUPPORTED)})"
            )
    make_checkpoint(args.out, et, dt, size, seed=args.seed)
    if args.fit:
        rep = fit_encoder(args.out, args.out, seed=args.seed, **PRESET_FIT.get(args.preset, {}))
        print(f"fitted the encoder in {rep['time_s']:.0f} s ({rep['config']['method']}, k={rep['config']['k']})")
    print(f"wrote {args.out} ({et}, {dt}, {size}{', fitted encoder' if args.fit else ''})")
    return EXIT_OK
