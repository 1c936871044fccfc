"""``restyle-rt eval``: inversion quality per loop step against the inputs (PSNR, SSIM, MS-SSIM; latent error).

Registration imports nothing heavy; the work is torch-free (:mod:`restyle_rt.workflows.evaluate`).

Each image is inverted with --iters steps; at every step t = 0..N (0: the loop's start, latent_avg and its image,
"no move") the inversion (tensor2im uint8, the PNG `invert` writes) is compared with the input resized to the
generator's output size by Pillow's bilinear resize (the runtime's resize): PSNR in dB (peak 255), SSIM (Wang et
al.: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) and MS-SSIM (5 scales, standard weights; an output under
176 px uses as many scales as fit, weights renormalised, and says how many). --true-latents FILE.npy [N, S, 512],
one per image in the order the images are listed (each directory's files sorted by path), adds the RMS error of
the W+ latent to the truth. The table printed is the mean over images per step.

LPIPS and the identity similarity (the official calc_losses_on_images.py / calc_id_loss_parallel.py) need
pretrained networks that restyle-rt neither ships nor downloads: they are NOT computed, and the output says so.

Outputs under --out DIR: eval.json (per image per step, means, what was compared, the command, the machine),
eval.csv (image,step,metrics rows, then the "(mean)" rows), and with --plot eval.png (per-step curves; needs
matplotlib, the [bench] extra). An unreadable image or folder is an error (exit 2), not skipped: the means and the
true-latents order need every image.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..errors import EXIT_OK
from .args import (
    RawBackendHelpFormatter,
    add_artifacts,
    add_loop_options,
    add_out_dir,
    batch_size,
    check_loop_options,
    load_options,
)

OUTPUTS = ("eval.json", "eval.csv")
PLOT = "eval.png"


def register(subparsers) -> None:
    """Add ``eval`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "eval",
        help="inversion quality per step: PSNR, SSIM, MS-SSIM (no LPIPS / ID)",
        description="Inversion quality per loop step against the inputs: PSNR, SSIM, MS-SSIM "
        "and, given the true latents, the latent error.",
        formatter_class=RawBackendHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[4:]),
    )
    add_artifacts(p)
    p.add_argument("inputs", metavar="IMAGES", nargs="+", help="image files or directories (searched recursively)")
    add_loop_options(p)
    p.add_argument(
        "--true-latents",
        metavar="FILE.npy",
        help="true W+ latents [N, S, 512], one per image in listed order: adds the latent RMS error",
    )
    add_out_dir(p, help="write eval.json and eval.csv (and eval.png with --plot) here", required=False)
    p.add_argument("--plot", action="store_true", help="also write DIR/eval.png, per-step curves (needs matplotlib)")
    p.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed arguments."""
    parts = ["restyle-rt", "eval", args.artifacts, *args.inputs]
    for flag, val in (
        ("--iters", args.iters),
        ("--batch", args.batch),
        ("--backend", args.backend),
        ("--precision", args.precision),
        ("--true-latents", args.true_latents),
        ("--out", args.out),
    ):
        if val is not None:
            parts += [flag, str(val)]
    parts += [f for f, on in (("--plot", args.plot), ("--no-verify", args.no_verify)) if on]
    return " ".join(shlex.quote(str(p)) for p in parts)


def run(args) -> int:
    """Do ``eval``; returns 0. Arguments, images and --out are checked before any model loads."""
    from .. import artifacts, fsio, progress
    from ..errors import InputError
    from ..runtime import io
    from ..runtime.api import Inverter
    from ..runtime.hostinfo import machine_record
    from ..workflows import evaluate as ev
    from .outputs import check_no_overwrite, check_out_dir, exclude_under

    check_loop_options(args)
    if args.plot and not args.out:
        raise InputError("--plot writes DIR/eval.png: give --out DIR")
    if args.plot:
        ev.check_plot_available()
    paths = io.list_images(args.inputs)  # InputError: a missing path, or no image in a folder
    out = None
    if args.out:
        out = Path(args.out)
        check_out_dir(out, args.inputs)
        paths = exclude_under(out, paths, args.inputs)  # not an earlier eval.png
        if not paths:
            raise InputError(f"no images to evaluate: every image found lies under --out {args.out}")
        check_no_overwrite([out / f for f in (*OUTPUTS, *((PLOT,) if args.plot else ()))], paths)
    names = io.output_names(paths, args.inputs)
    truth = None
    if args.true_latents:  # checked against the manifest's spec before any model loads
        spec = artifacts.load(args.artifacts, check_hashes=False).spec
        truth = ev.load_true_latents(args.true_latents, len(paths), spec.n_styles)
    with Inverter.load(args.artifacts, **load_options(args)) as inv:
        with progress.bar(total=len(paths), unit="img", desc="eval") as bar:
            res = ev.evaluate(
                inv,
                paths,
                args.iters,
                truth,
                names=names,
                batch=batch_size(args.batch, inv.profile),
                progress=bar.update,
            )
        precision = getattr(inv.backend, "precision", None)
    res.extra = {
        "command": command_line(args),
        "machine": machine_record(),
        "artifacts": str(Path(args.artifacts).resolve()),
        "precision": precision or args.precision,
        "true_latents": str(Path(args.true_latents).resolve()) if args.true_latents else None,
        "inputs": [str(p) for p in paths],
    }
    h, w = res.compare_hw
    print(
        f"{len(paths)} image(s), {args.iters} steps, {res.backend}; compared at {h}x{w} (the generator's output "
        f"size; inputs resized with Pillow bilinear); MS-SSIM over {res.ms_ssim_scales} of 5 scales"
    )
    print(res.table())
    for key in ev.NOT_COMPUTED:
        print(f"{key}: {ev.NOT_COMPUTED[key]}")
    if out is not None:
        fsio.write_json(out / "eval.json", {**res.to_dict()})
        fsio.write_text(out / "eval.csv", res.csv_text())
        written = list(OUTPUTS)
        if args.plot:
            ev.plot(res, out / PLOT)
            written.append(PLOT)
        print(f"wrote {', '.join(written)} -> {out}", file=sys.stderr)
    return EXIT_OK
