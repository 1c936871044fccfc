"""``restyle-rt align``: FFHQ-align face images (official recipe; dlib 68 landmarks shipped by a package).

Writes DIR/NAME.png per input. An image with no face is reported on one line and skipped (exit code 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EXIT_OK, EXIT_SKIPPED
from .args import add_out_dir, positive_int


def register(subparsers) -> None:
    """Add ``align`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "align", help="FFHQ-align face images (needs the [align] extra)", description=__doc__.splitlines()[0]
    )
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image files or directories")
    add_out_dir(p)
    p.add_argument(
        "--size", type=positive_int, default=256, help="output size in pixels (default 256, as the official)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Do ``align``: 0 when every image was aligned, 1 when some were skipped."""
    from .. import progress
    from ..align.landmarks import Aligner
    from ..errors import InputError
    from ..runtime import io

    aligner = Aligner(args.size)
    paths = io.list_images(args.inputs)
    names = io.output_names(paths, args.inputs)
    out, skipped = Path(args.out), 0
    for p, name in progress.bar(list(zip(paths, names)), unit="img", desc="align"):
        try:
            io.write_png(out / f"{name}.png", aligner(io.read_image(p), str(p)))
        except InputError as e:
            skipped += 1
            progress.write(f"skipped: {e}")
    print(f"aligned {len(paths) - skipped} image(s) ({skipped} skipped) -> {out}", file=sys.stderr)
    return EXIT_SKIPPED if skipped else EXIT_OK
