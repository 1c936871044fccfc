"""``restyle-rt build ARTIFACTS``: TensorRT / TensorRT-RTX engines for an exported artifacts directory.

Registration imports nothing heavy; TensorRT is imported when the command runs.
"""

from __future__ import annotations

import argparse

from ..errors import EXIT_OK, InputError
from .args import add_artifacts


def _batch(text: str):
    from ..spec import BatchProfile

    try:
        parts = [int(x) for x in text.split(",")]
        if len(parts) == 1:
            parts = [1, parts[0], parts[0]]
        return BatchProfile(*parts)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"--batch {text!r}: expected MIN,OPT,MAX (or MAX), e.g. 1,1,8 ({e})") from None


def register(subparsers) -> None:
    """Add ``build`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "build",
        help="build TensorRT / TensorRT-RTX engines for an artifacts directory",
        description="Build one engine per graph into ARTIFACTS/engines/ and record them in manifest.json. "
        "TensorRT-RTX builds ahead of time without a GPU; standard TensorRT builds on the target GPU.",
    )
    add_artifacts(p)
    p.add_argument(
        "--precision",
        choices=("fp16", "fp32", "int8"),
        default="fp16",
        help="engine precision (default fp16); int8 builds the Q/DQ graphs of `restyle-rt calibrate`",
    )
    p.add_argument(
        "--batch",
        type=_batch,
        default=None,
        metavar="MIN,OPT,MAX",
        help="batch optimization profile (default: the manifest's batch_profile)",
    )
    p.add_argument("--workspace", type=float, default=4.0, metavar="GB", help="builder workspace limit (default 4)")
    p.add_argument(
        "--timing-cache",
        default=None,
        metavar="PATH",
        help="timing cache to load and update (standard TensorRT; TensorRT-RTX ignores it)",
    )
    p.add_argument(
        "--compute-capability",
        default=None,
        metavar="CC[,CC...]",
        help="TensorRT-RTX AOT targets, e.g. 8.6,8.9, or 'current' (default: all it knows but 7.5)",
    )
    p.add_argument(
        "--flavour",
        choices=("tensorrt", "tensorrt-rtx"),
        default="",
        help="which TensorRT to use when both are installed (default: tensorrt, else tensorrt-rtx)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even when a matching engine is recorded")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engine import build_engines, summarize

    ccs = [c for c in args.compute_capability.split(",") if c] if args.compute_capability else None
    if ccs and "current" in ccs and len(ccs) > 1:
        raise InputError("--compute-capability: 'current' cannot be combined with other targets")
    records = build_engines(
        args.artifacts,
        precision=args.precision,
        profile=args.batch,
        workspace_gb=args.workspace,
        timing_cache=args.timing_cache,
        rebuild=args.rebuild,
        compute_capabilities=ccs,
        flavour=args.flavour,
    )
    for line in summarize(records):
        print(line)
    return EXIT_OK
