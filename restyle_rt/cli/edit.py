"""``restyle-rt edit`` and ``restyle-rt animate``: the official editing and animation workflows on the runtime.

Both start from images (inverted first, ``--iters`` steps) or from saved latents (``--latents latents.npy`` as
``restyle-rt invert --save-latents`` writes it). Registration imports nothing heavy; the work is torch-free.

edit outputs under ``--out DIR`` (NAME is the input's stem)::

    DIR/<direction>/NAME.png   [input, inversion, edit_1 .. edit_F] left to right (official editing_results)
    DIR/coupled/NAME.png       the direction strips stacked, when every direction has the same factor count

Before any model loads, as ``invert`` does (:mod:`restyle_rt.cli.outputs`): no output may overwrite an input
(``--out`` is not an input directory; images already under ``--out`` are not read from an input directory that
contains it), and one process at a time writes an ``--out`` (edit: ``DIR/.restyle-rt/lock``; animate:
``.restyle-rt/FILE.lock`` beside the video). Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EXIT_OK
from .args import (
    BackendHelpFormatter,
    RawBackendHelpFormatter,
    accept_negative_lists,
    add_artifacts,
    add_backend,
    add_iters,
    add_out_dir,
    check_loop_options,
    load_options,
)


def register(subparsers) -> None:
    """Add ``edit`` and ``animate`` to ``restyle-rt``."""
    e = subparsers.add_parser(
        "edit",
        help="InterFaceGAN edits of inverted images",
        description=__doc__.split("\n\n")[0],
        formatter_class=RawBackendHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[5:]),
    )
    _common(e)
    e.add_argument(
        "--direction",
        required=True,
        action="append",
        metavar="FILE",
        help="direction .pt (read without torch), .safetensors or .npy; repeat for several",
    )
    e.add_argument(
        "--factors",
        default="-5,5",
        metavar="F|A,B[,STEP]",
        help="one factor, or the official range(A, B) (default -5,5: -5..4)",
    )
    add_out_dir(e)
    accept_negative_lists(e)  # `--factors -5,5`
    e.set_defaults(func=run_edit)
    a = subparsers.add_parser(
        "animate",
        help="video interpolating between the inversions of several images",
        formatter_class=BackendHelpFormatter,
        description="Official animations notebook: interpolate consecutive latents and "
        "decode every frame through the synthesis graph.",
    )
    _common(a)
    a.add_argument("--out", required=True, metavar="FILE", help="video file: .mp4, .avi or .gif")
    a.add_argument("--frames", type=int, default=25, metavar="N", help="frames per transition (default 25)")
    a.add_argument("--fps", type=float, default=15.0, help="frames per second (default 15)")
    a.add_argument("--no-loop", action="store_true", help="do not return to the first image at the end")
    a.add_argument("--no-inputs", action="store_true", help="frames only, without the input wipe beside them")
    a.set_defaults(func=run_animate)


def _common(p) -> None:
    add_artifacts(p)
    p.add_argument("inputs", metavar="INPUT", nargs="*", help="image files or directories")
    p.add_argument("--latents", metavar="NPY", help="start from saved latents instead of inverting images")
    add_iters(p)
    add_backend(p)


def _plan(args, out_dir) -> tuple:
    """Check the sources before any model loads; (paths, names) of the input images ([] with ``--latents``),
    without files under ``out_dir`` found by walking an input directory that contains it (earlier outputs)."""
    from ..errors import InputError
    from ..runtime import io
    from .outputs import exclude_under

    if bool(args.latents) == bool(args.inputs):
        raise InputError("give either INPUT images or --latents, not both or neither")
    check_loop_options(args)
    if args.latents:
        return [], []
    paths = exclude_under(out_dir, io.list_images(args.inputs), args.inputs)
    if not paths:
        raise InputError(f"no images to read: every image found lies under --out {args.out}")
    return paths, io.output_names(paths, args.inputs)


def _sources(args, inv, paths, names):
    """(latents [N, S, 512], names, input images uint8 or None) from --latents or by inverting ``paths``."""
    from ..runtime import io
    from ..workflows.common import load_latents

    if args.latents:
        lat, names = load_latents(args.latents, inv.spec.n_styles)
        return lat, names, None
    x = inv.preprocess(paths)  # [N, 3, H, W]
    res = inv.invert(x, n_iters=args.iters)
    return res.latents, names, [io.to_uint8(xi) for xi in x]


def run_edit(args) -> int:
    """Do ``edit``; returns 0. ``--out`` is checked (not an input directory, no output over an input) and locked
    against a second writer before any model loads."""
    from ..workflows.editing import parse_factors
    from .outputs import check_no_overwrite, check_out_dir, lock_dir

    factors = parse_factors(args.factors)
    out = Path(args.out)
    check_out_dir(out, args.inputs)
    paths, names = _plan(args, out)
    stems = [Path(d).stem for d in args.direction] + (["coupled"] if len(args.direction) > 1 else [])
    check_no_overwrite([out / s / f"{n}.png" for s in stems for n in names], paths)
    lock = lock_dir(out, "edit")
    try:
        n, n_dirs = _edit(args, out, factors, paths, names)
    finally:
        if lock is not None:
            lock.close()
    print(f"edited {n} image(s) x {n_dirs} direction(s) x {len(factors)} factor(s) -> {out}", file=sys.stderr)
    return EXIT_OK


def _edit(args, out, factors, paths, names):
    """Render and write every strip; returns (images, directions)."""
    import numpy as np

    from .. import progress
    from ..runtime import io
    from ..runtime.api import Inverter
    from ..workflows.directions import fit_direction, load_direction
    from ..workflows.editing import render_edits

    with Inverter.load(args.artifacts, **load_options(args)) as inv:
        dirs = {Path(d).stem: fit_direction(load_direction(d), inv.spec.n_styles, d) for d in args.direction}
        lat, names, inputs = _sources(args, inv, paths, names)
        inversions = inv.synthesize(lat)  # [N, 3, h, w]
        bar = progress.bar(total=len(dirs) * len(factors) * len(lat), unit="img", desc="edit")
        strips = {n: [] for n in names}
        for dname, d in dirs.items():
            edits = render_edits(inv, lat, d, factors, bar.update)  # [N, F, 3, h, w]
            for i, name in enumerate(names):
                inv_im = io.to_uint8(inversions[i])
                h, w = inv_im.shape[:2]
                row = ([io.resize_for_display(inputs[i], (h, w))] if inputs is not None else []) + [inv_im]
                row += [io.to_uint8(e) for e in edits[i]]
                strip = np.concatenate(row, axis=1)  # [h, (2+F)w, 3]
                io.write_png(out / dname / f"{name}.png", strip)
                strips[name].append(strip)
        bar.close()
    if len(dirs) > 1:
        for name, rows in strips.items():
            io.write_png(out / "coupled" / f"{name}.png", np.concatenate(rows, axis=0))
    return len(names), len(dirs)


def run_animate(args) -> int:
    """Do ``animate``; returns 0. ``--out`` may not be an input image, and one process at a time writes it (a
    lock in ``.restyle-rt/`` beside it); both checked before any model loads."""
    from .. import fsio, progress
    from ..errors import InputError
    from ..runtime.api import Inverter
    from ..workflows.animation import check_writable_type, interpolate, render, write_video
    from .outputs import check_no_overwrite, lock_dir

    if args.frames < 2:
        raise InputError(f"--frames must be >= 2, got {args.frames}")
    if not args.fps > 0:
        raise InputError(f"--fps must be > 0, got {args.fps}")
    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".avi", ".gif"):
        raise InputError(f"--out {out}: use a .mp4, .avi or .gif file name")
    check_writable_type(out)  # PyAV installed for .mp4 / .avi
    fsio.check_writable_file(out, "--out")
    paths, names = _plan(args, out)
    check_no_overwrite([out], paths)
    lock = lock_dir(out.parent, "animate", name=f"{out.name}.lock", target=out)
    try:
        with Inverter.load(args.artifacts, **load_options(args)) as inv:
            lat, _names, inputs = _sources(args, inv, paths, names)
            n_frames = interpolate(lat, args.frames, not args.no_loop)[0].shape[0]
            with progress.bar(total=n_frames, unit="frame", desc="animate") as bar:
                frames = render(inv, lat, args.frames, not args.no_loop, None if args.no_inputs else inputs, bar.update)
        write_video(out, frames, args.fps)
    finally:
        if lock is not None:
            lock.close()
    print(f"wrote {len(frames)} frames at {args.fps:g} fps -> {out}", file=sys.stderr)
    return EXIT_OK
