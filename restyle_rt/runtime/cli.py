"""``restyle-rt invert``: invert images or directories with an artifacts directory.

Registration imports nothing heavy.

Outputs under ``--out DIR`` (NAME is the input's stem, or its path below an input directory)::

    DIR/NAME.png                 the final image (official tensor2im: clip, x255, truncate)
    DIR/steps/<t>/NAME.png       every step t = 1..N            (--save-steps)
    DIR/strips/NAME.png          steps left to right, then the input      (--strip)
    DIR/latents.npy, latents.json  [N_images, T, S, 512] float32 + input names, steps used   (--save-latents)

A file that cannot be decoded is reported on one line and skipped; the exit code is then 1 (0 when all
worked).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``invert`` subcommand to ``restyle-rt``."""
    p = subparsers.add_parser(
        "invert",
        help="invert images with exported artifacts",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_epilog(),
    )
    p.add_argument("artifacts", metavar="ARTIFACTS", help="artifacts directory (from `restyle-rt export`)")
    p.add_argument(
        "inputs", metavar="INPUT", nargs="+", help="image files or directories (searched recursively)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--iters", type=int, default=5, metavar="N", help="ReStyle steps per image (default 5)")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="images per backend call (default: the artifacts' profile max)",
    )
    p.add_argument(
        "--backend", default="auto", metavar="NAME", help="auto | ort | trt | torch (default auto)"
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "fp16", "int8", "auto"),
        help="graphs/engines to run: ort takes fp32 | int8 | auto (INT8 only if the calibration's measured "
        "accuracy met its bar); trt takes fp32 | fp16 | int8 engines (default: the backend's own)",
    )
    p.add_argument("--save-steps", action="store_true", help="write one PNG per image per step")
    p.add_argument(
        "--save-latents", action="store_true", help="write latents.npy [N, T, S, 512] + latents.json"
    )
    p.add_argument("--strip", action="store_true", help="write steps left to right then the input, per image")
    p.add_argument(
        "--early-exit",
        type=float,
        default=None,
        metavar="THRESH",
        help="stop an image once the RMS of its latent update is below THRESH (not official)",
    )
    p.set_defaults(func=run)


def _epilog() -> str:
    return "\n".join(__doc__.splitlines()[2:])


def run(args) -> int:
    """Do ``invert``: returns 0 when every image was written, 1 when some were skipped."""
    import numpy as np
    from tqdm import tqdm

    from ..errors import InputError
    from . import io
    from .api import Inverter

    _quiet_opencv()
    if args.iters < 1:
        raise InputError(f"--iters must be >= 1, got {args.iters}")
    if args.batch is not None and args.batch < 1:
        raise InputError(f"--batch must be >= 1, got {args.batch}")
    paths = io.list_images(args.inputs)
    names = io.output_names(paths, args.inputs)
    out = Path(args.out)
    keep_steps = args.save_steps or args.strip or args.save_latents
    done_names, latents, steps_used, skipped, t0 = [], [], [], 0, time.perf_counter()
    opts = {} if args.precision is None else {"precision": args.precision}
    with Inverter.load(args.artifacts, backend=args.backend, **opts) as inv:
        batch = args.batch or inv.profile.max
        bar = tqdm(total=len(paths), unit="img", desc="invert", file=sys.stderr, dynamic_ncols=True)
        for i in range(0, len(paths), batch):
            imgs, ok = [], []
            for p, n in zip(paths[i : i + batch], names[i : i + batch]):
                try:
                    imgs.append(io.read_image(p))
                    ok.append(n)
                except InputError as e:
                    skipped += 1
                    bar.write(f"skipped: {e}", file=sys.stderr)
            if imgs:
                x = inv.preprocess(imgs)  # [b, 3, H, W]
                res = inv.invert(x, n_iters=args.iters, return_steps=keep_steps, early_exit=args.early_exit)
                _write(out, ok, x, res, args)
                done_names += ok
                if args.save_latents:
                    latents.append(np.stack(res.step_latents, axis=1))  # [b, T, S, 512]
                    steps_used += res.steps_used.tolist()
            bar.update(len(paths[i : i + batch]))
        bar.close()
    if args.save_latents and done_names:
        _save_latents(out, done_names, latents, steps_used, args.iters)
    dt = time.perf_counter() - t0
    n = len(done_names)
    print(
        f"inverted {n} image(s) ({skipped} skipped) in {dt:.2f} s, {n / dt:.2f} images/s "
        f"[{inv.backend.name}, {args.iters} iters] -> {out}",
        file=sys.stderr,
    )
    return 1 if skipped else 0


def _write(out: Path, names, x, res, args) -> None:
    import numpy as np

    from . import io

    for j, name in enumerate(names):
        io.write_png(out / f"{name}.png", io.to_uint8(res.images[j]))
        steps = [io.to_uint8(s[j]) for s in res.step_images] if (args.save_steps or args.strip) else []
        if args.save_steps:
            for t, im in enumerate(steps, start=1):
                io.write_png(out / "steps" / str(t) / f"{name}.png", im)
        if args.strip:
            h, w = steps[0].shape[:2]
            inp = io.resize_for_display(io.to_uint8(x[j]), (h, w))  # the encoder input, shown at output size
            io.write_png(
                out / "strips" / f"{name}.png", np.concatenate(steps + [inp], axis=1)
            )  # [h, (T+1)w, 3]


def _save_latents(out: Path, names, parts, steps, n_iters: int) -> None:
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    arr = np.concatenate(parts).astype(np.float32, copy=False)  # [N, T, S, 512]
    np.save(out / "latents.npy", arr)
    index = {
        "inputs": list(names),
        "shape": list(arr.shape),
        "n_iters": n_iters,
        "steps_used": steps,
        "layout": "latents.npy[i, t]: inputs[i] after step t+1; steps past steps_used repeat the last",
    }
    (out / "latents.json").write_text(json.dumps(index, indent=1) + "\n")


def _quiet_opencv() -> None:
    """OpenCV logs decode warnings to stderr itself; bad files are reported by us, once."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass
