"""restyle-rt video: invert (and edit) a clip frame by frame, warm-started from the previous frame.

Frame 1 runs --iters steps from the loop seeds; every later frame runs --iters-next steps from the previous
frame's final latent and feedback (--cold: every frame from the seeds, the official per-frame inversion). Writes
--out (.mp4 H.264 or .avi MJPEG, at the input's frame rate; no audio) and the per-frame latents (--latents-out,
default OUT.latents.npy [N, S, 512] + OUT.latents.json: input frame index and steps of each row, skipped frames).

Edits: --direction FILE --factor F (repeat both; one --factor applies to every direction) writes w + sum f_i d_i,
with the same direction files as `edit`. --side-by-side writes [input, inversion, edit] per frame.
--align: FFHQ alignment per frame (the [align] extra), landmarks averaged over time (--align-smooth); a frame
without a face is skipped (named; exit 1) and the next one starts cold; no face in any frame: error, no output.

Bad input (not a video, a truncated file, a frame size change mid-stream) is an error (exit 2) and nothing is left
written: the video and the latents appear complete or not at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EXIT_OK, EXIT_SKIPPED
from .args import (
    RawBackendHelpFormatter,
    add_artifacts,
    add_backend,
    add_early_exit,
    add_no_verify,
    load_options,
    nonneg_int,
    positive_int,
)

# restyle_rt.workflows.video's defaults, restated so that registration imports nothing heavy (a test keeps them equal)
DEFAULT_ITERS, DEFAULT_ITERS_NEXT, DEFAULT_ALIGN_SMOOTH = 5, 2, 0.5


def register(subparsers) -> None:
    """Add ``video`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "video",
        help="invert (and edit) a video clip frame by frame, warm-started",
        description=__doc__.split("\n\n")[0],
        formatter_class=RawBackendHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    add_artifacts(p)
    p.add_argument("input", metavar="CLIP", help="input video (anything FFmpeg decodes)")
    p.add_argument("--out", required=True, metavar="FILE", help="output video: .mp4 (H.264) or .avi (MJPEG)")
    p.add_argument(
        "--iters",
        type=positive_int,
        default=DEFAULT_ITERS,
        metavar="N",
        help=f"steps of the first frame (every frame with --cold); default {DEFAULT_ITERS}",
    )
    p.add_argument(
        "--iters-next",
        type=positive_int,
        default=DEFAULT_ITERS_NEXT,
        metavar="N",
        help=f"steps of each later frame, from the previous frame's state (default {DEFAULT_ITERS_NEXT})",
    )
    p.add_argument("--cold", action="store_true", help="every frame from the seeds with --iters steps")
    add_early_exit(p, "stop a frame once its latent update RMS is below THRESH (not official)")
    p.add_argument(
        "--smooth",
        type=nonneg_int,
        default=0,
        metavar="R",
        help="average the latents over frames t-R..t+R (triangular weights; R frames of latency); default 0: off",
    )
    p.add_argument(
        "--direction",
        action="append",
        default=[],
        metavar="FILE",
        help="edit direction .pt / .safetensors / .npy (repeatable)",
    )
    p.add_argument(
        "--factor",
        action="append",
        type=float,
        default=[],
        metavar="F",
        help="edit strength per --direction (one value applies to all)",
    )
    p.add_argument("--side-by-side", action="store_true", help="write [input, inversion(, edit)] per frame")
    p.add_argument("--align", action="store_true", help="FFHQ-align each frame first (needs the [align] extra)")
    p.add_argument(
        "--align-smooth",
        type=float,
        default=DEFAULT_ALIGN_SMOOTH,
        metavar="A",
        help=f"weight of a frame's own landmarks in their moving average, (0, 1]; 1: off "
        f"(default {DEFAULT_ALIGN_SMOOTH})",
    )
    p.add_argument("--latents-out", metavar="NPY", help="per-frame latents (default: OUT.latents.npy)")
    p.add_argument("--no-latents", action="store_true", help="do not write the latents")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the input's)")
    add_backend(p)
    add_no_verify(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Do ``video``; returns 0, or 1 when frames were skipped (no face). Outputs are checked (writable, not the
    input, not locked by another run) before any model loads."""
    from .. import fsio
    from ..errors import InputError
    from ..workflows.animation import VIDEO_CODECS, check_writable_type
    from .outputs import check_no_overwrite, lock_dir

    out, src = Path(args.out), Path(args.input)
    if out.suffix.lower() not in VIDEO_CODECS:
        raise InputError(f"--out {out}: use a .mp4 or .avi file name (a GIF would hold the clip in memory)")
    if not src.is_file():
        raise InputError(f"{src}: no such video file")
    if args.fps is not None and not args.fps > 0:
        raise InputError(f"--fps must be > 0, got {args.fps}")
    if args.factor and not args.direction:
        raise InputError("--factor needs a --direction")
    if args.direction and not args.factor:
        raise InputError("--direction needs a --factor (the edit strength, e.g. --factor 3)")
    if args.direction and len(args.factor) not in (1, len(args.direction)):
        raise InputError(f"give one --factor, or one per --direction ({len(args.direction)}), got {len(args.factor)}")
    check_writable_type(out)
    fsio.check_writable_file(out, "--out")
    latents = None if args.no_latents else Path(args.latents_out or out.with_suffix(".latents.npy"))
    if latents is not None:
        if latents.suffix.lower() != ".npy":
            raise InputError(f"--latents-out {latents}: use a .npy file name")
        fsio.check_writable_file(latents, "--latents-out")
    outputs = [out] + ([latents, latents.with_suffix(".json")] if latents is not None else [])
    check_no_overwrite(outputs, [src])
    if len({o.resolve() for o in outputs}) < len(outputs):
        raise InputError("--out and --latents-out name the same file")
    lock = lock_dir(out.parent, "video", name=f"{out.name}.lock", target=out)
    try:
        report = _run(args, src, out, latents)
    finally:
        if lock is not None:
            lock.close()
    if report.skipped:  # each was logged as it happened
        print(
            f"restyle-rt video: skipped {len(report.skipped)} frame(s): "
            + ", ".join(f"{i} ({report.reasons.get(i, '?')})" for i in report.skipped),
            file=sys.stderr,
        )
    warm = report.frames_out - report.cold
    print(
        f"wrote {report.frames_out} of {report.frames_in} frames ({report.fps:g} fps) -> {out} in "
        f"{report.seconds:.1f} s ({report.frames_in / max(report.seconds, 1e-9):.2f} frames/s; "
        f"{sum(report.steps)} steps, {warm} frames warm-started)" + (f"; latents -> {latents}" if latents else ""),
        file=sys.stderr,
    )
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def _run(args, src: Path, out: Path, latents):
    import numpy as np

    from ..runtime.api import Inverter
    from ..workflows.directions import fit_direction, load_direction
    from ..workflows.video import SmoothedAligner, VideoSettings, invert_video

    aligner = SmoothedAligner(smooth=args.align_smooth) if args.align else None  # fails fast without the extra
    with Inverter.load(args.artifacts, **load_options(args)) as inv:
        edit = None
        if args.direction:
            factors = args.factor * len(args.direction) if len(args.factor) == 1 else args.factor
            edit = np.zeros((inv.spec.n_styles, 512), np.float32)
            for d, f in zip(args.direction, factors):
                edit += np.float32(f) * fit_direction(load_direction(d), inv.spec.n_styles, d)
        settings = VideoSettings(
            iters=args.iters,
            iters_next=args.iters_next,
            cold=args.cold,
            early_exit=args.early_exit,
            smooth=args.smooth,
            edit=edit,
            side_by_side=args.side_by_side,
            aligner=aligner,
        )
        return invert_video(inv, src, out, settings, latents=latents, fps=args.fps)
