"""``restyle-rt invert``: invert images or directories with an artifacts directory.

Registration imports nothing heavy.

Outputs under ``--out DIR`` (NAME is the input's stem, or its path below an input directory)::

    DIR/NAME.png                 the final image (official tensor2im: clip, x255, truncate)
    DIR/steps/<t>/NAME.png       every step t = 1..N            (--save-steps)
    DIR/strips/NAME.png          steps left to right, then the input      (--strip)
    DIR/latents.npy, latents.json  [N_images, T, S, 512] float32 + input names, steps used   (--save-latents)
    DIR/report.html              this run's inputs, steps (or final images), steps used, timings   (--report)

Every file is written under a temporary name and renamed: an interrupted or failed run leaves only complete
files (and, with --save-latents, latents.npy for every image that finished). --out must not be an input
directory, and no output may overwrite an input; images already under --out are never taken as inputs when
an input directory is walked. Existing outputs are
replaced (the run says how many); --resume skips images whose outputs are complete instead. One process at a
time writes an --out (a lock in DIR/.restyle-rt, which also keeps per-image latents and the run settings).

Images are read and resized on --workers threads while the loop runs, a batch or two ahead (the outputs are the
same as with --workers 0). A file that cannot be decoded, or whose inversion is not finite, is reported on one
line and skipped; the exit code is then 1 (0 when all worked; 2 bad arguments or artifacts; 3 output unwritable,
full or locked; 6 the backend cannot run here; 130/143 interrupted; `restyle-rt --help` lists every code).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from ..errors import EXIT_OK, EXIT_SKIPPED
from .args import (
    RawBackendHelpFormatter,
    add_artifacts,
    add_early_exit,
    add_loop_options,
    add_out_dir,
    batch_size,
    check_loop_options,
    load_options,
)


def register(subparsers) -> None:
    """Add the ``invert`` subcommand to ``restyle-rt``."""
    p = subparsers.add_parser(
        "invert",
        help="invert images with exported artifacts",
        description=__doc__.splitlines()[0],
        formatter_class=RawBackendHelpFormatter,
        epilog=_epilog(),
    )
    add_artifacts(p)
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image files or directories (searched recursively)")
    add_out_dir(p)
    add_loop_options(p)
    p.add_argument(
        "--bootstrap",
        metavar="ARTIFACTS1",
        help="encoder bootstrapping (official toonify recipe): ARTIFACTS1's model takes step 1 from its own "
        "seeds, then ARTIFACTS' model takes --iters more steps from there",
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="FFHQ-align faces first (official recipe; needs the [align] extra); no face: skipped",
    )
    p.add_argument("--save-steps", action="store_true", help="write one PNG per image per step")
    p.add_argument("--save-latents", action="store_true", help="write latents.npy [N, T, S, 512] + latents.json")
    p.add_argument("--strip", action="store_true", help="write steps left to right then the input, per image")
    p.add_argument("--report", action="store_true", help="write DIR/report.html: one page showing this run")
    add_early_exit(p, "stop an image once the RMS of its latent update is below THRESH (not official)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip images whose outputs in --out are complete (same settings); without it they are replaced",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads reading and resizing images while the loop runs, up to 2 batches ahead (default: the "
        "CPUs, at most 4; 0: read each batch on the main thread when it is due)",
    )
    p.add_argument(
        "--jpeg-draft",
        action="store_true",
        help="decode JPEGs at 1/2-1/8 scale before the resize: several times faster on large photos, but not the "
        "official transforms' bytes (up to ~5 of 255 levels off at the encoder input; not with --align)",
    )
    p.set_defaults(func=run)


def _epilog() -> str:
    return "\n".join(__doc__.splitlines()[2:])


def run(args) -> int:
    """Do ``invert``: returns 0 when every image was written, 1 when some were skipped."""
    from ..errors import InputError
    from ..runtime import io
    from .outputs import RunDir

    check_loop_options(args)
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.jpeg_draft and args.align:
        raise InputError("--jpeg-draft does not apply to --align (alignment reads the image at full size)")
    if args.bootstrap:
        from .. import artifacts
        from ..workflows.bootstrap import check_pair

        if args.early_exit is not None:
            raise InputError("--early-exit does not apply to --bootstrap (the official recipe runs every step)")
        check_pair(
            artifacts.load(args.bootstrap, check_hashes=False),  # before --out is touched: manifests only
            artifacts.load(args.artifacts, check_hashes=False),
        )
    settings = {
        "artifacts": str(Path(args.artifacts).resolve()),
        "iters": args.iters,
        "early_exit": args.early_exit,
        "bootstrap": str(Path(args.bootstrap).resolve()) if args.bootstrap else None,
        "align": args.align,
    }
    if args.jpeg_draft:  # changes the encoder input: --resume must not mix it with exact decoding
        settings["jpeg_draft"] = True
    aligner = None
    if args.align:  # before any model loads: a missing extra fails fast
        from ..align.landmarks import Aligner

        aligner = Aligner()
    run_dir = RunDir(args.out, settings, args.save_steps, args.strip, args.save_latents)
    run_dir.check_out(args.inputs)  # all of this before any model is loaded
    paths = run_dir.exclude_outputs(io.list_images(args.inputs), args.inputs)
    if not paths:
        raise InputError(f"no images to invert: every image found lies under --out {args.out}")
    names = io.output_names(paths, args.inputs)
    run_dir.check_inputs(paths, names)
    run_dir.lock()
    try:
        todo = set(run_dir.plan(names, args.resume))
        work = [(p, n) for p, n in zip(paths, names) if n in todo]
        report = _report(args, settings) if getattr(args, "report", False) else None
        done, skipped, label, dt = _invert_all(args, run_dir, work, aligner, report)
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: the images finished so far keep complete outputs and,
        if args.save_latents:  # where the disk allows, latents.npy (they are kept per image for --resume anyway)
            _salvage_latents(run_dir, names)
        raise
    finally:
        run_dir.close()
    if args.save_latents:
        run_dir.write_latents_index(names)
    if report is not None:
        report.write(label, dt)
    print(
        f"inverted {done} image(s) ({skipped} skipped{_resumed(len(paths) - len(work))}) in {dt:.2f} s, "
        f"{done / max(dt, 1e-9):.2f} images/s [{label}, {args.iters} iters] -> {run_dir.out}",
        file=sys.stderr,
    )
    return EXIT_SKIPPED if skipped else EXIT_OK


def _salvage_latents(run_dir, names) -> None:
    import logging

    try:
        n = run_dir.write_latents_index(names)
        logging.getLogger("restyle_rt").info("wrote latents.npy for the %d image(s) finished", n)
    except OSError as e:  # the original error is the one to report
        logging.getLogger("restyle_rt").warning("could not write latents.npy (%s); rerun with --resume", e)


def _resumed(n: int) -> str:
    return f", {n} already complete" if n else ""


def _report(args, settings):
    from ..runtime.report import RunReport

    return RunReport(args.out, settings, args.save_steps, args.strip)


def _invert_all(args, run_dir, work, aligner=None, report=None):
    """Invert ``work`` [(path, name)] batch by batch, writing each image's outputs as its batch finishes.

    Returns:
        (images written, images skipped, "backend" label, seconds).
    """
    import numpy as np

    from .. import progress
    from ..runtime.api import Inverter
    from ..runtime.pipeline import Prefetcher

    done, skipped, t0 = 0, 0, time.perf_counter()
    keep_steps = args.save_steps or args.strip or args.save_latents
    with contextlib.ExitStack() as stack:
        inv = stack.enter_context(Inverter.load(args.artifacts, **load_options(args)))
        invert = _bootstrapped(stack, inv, args) if args.bootstrap else inv.invert
        batch = batch_size(args.batch, inv.profile)
        bar = progress.bar(total=len(work), unit="img", desc="invert")
        # closed before the backends (Ctrl-C, an error): the readers stop first; decoded originals are not kept
        batches = stack.enter_context(
            Prefetcher(work, _loader(inv.spec.input_hw, aligner, args.jpeg_draft), batch, args.workers)
        )
        for b in batches:
            for (_, _n), e in b.errors:
                skipped += 1
                bar.write(f"skipped: {e}", file=sys.stderr)
            if b.items:
                ok_paths, ok = [p for p, _ in b.items], [n for _, n in b.items]
                x = b.x  # [b, 3, H, W]
                t_batch = time.perf_counter()
                res = invert(x, n_iters=args.iters, return_steps=keep_steps, early_exit=args.early_exit)
                t_batch = time.perf_counter() - t_batch
                bad = _write(run_dir, ok, x, res, args)
                if report is not None:
                    failed = {ok[j] for j in np.flatnonzero(~_finite_mask(res))}
                    report.add_batch(ok, ok_paths, res.steps_used, run_dir.n_steps, t_batch, failed)
                for msg in bad:
                    bar.write(f"skipped: {msg}", file=sys.stderr)
                done += len(ok) - len(bad)
                skipped += len(bad)
            bar.update(b.size)
        bar.close()
        label = inv.backend.name
    return done, skipped, label, time.perf_counter() - t0


def _loader(hw, aligner=None, jpeg_draft=False):
    """``load((path, name)) -> [3, H, W]`` float32 encoder input, for the reader threads (InputError: skipped)."""
    import threading

    from ..runtime import io

    if aligner is None:
        return lambda item: io.preprocess_file(item[0], hw, jpeg_draft)  # decoded and resized by Pillow
    lock = threading.Lock()

    def load(item):
        img = io.read_image(item[0])
        with lock:  # one landmark detection at a time (dlib's detector and predictor are shared)
            img = aligner(img, str(item[0]))
        return io.preprocess(img, hw)

    return load


def _bootstrapped(stack, second, args):
    """``invert``-like callable running the bootstrap pair (model 1 = ``--bootstrap``, model 2 = ARTIFACTS)."""
    from ..runtime.api import Inverter
    from ..workflows.bootstrap import bootstrap, check_pair

    first = stack.enter_context(
        Inverter.load(args.bootstrap, backend=args.backend, verify=not args.no_verify, probe_batch=args.batch)
    )
    check_pair(first.artifacts, second.artifacts)
    return lambda x, n_iters, return_steps, early_exit: bootstrap(first, second, x, n_iters)


def _write(run_dir, names, x, res, args) -> list:
    """Write each image's outputs (finite ones only); returns one message per image skipped as non-finite."""
    import numpy as np

    from ..runtime import io

    out, bad = run_dir.out, []
    finite = _finite_mask(res)
    for j, name in enumerate(names):
        if not finite[j]:
            bad.append(f"{name}: the inversion is not finite (NaN/Inf in its latents or image); nothing written")
            continue
        io.write_png(out / f"{name}.png", io.to_uint8(res.images[j]))
        steps = [io.to_uint8(s[j]) for s in res.step_images] if (args.save_steps or args.strip) else []
        if args.save_steps:
            for t, im in enumerate(steps, start=1):
                io.write_png(out / "steps" / str(t) / f"{name}.png", im)
        if args.strip:
            h, w = steps[-1].shape[:2]  # (bootstrapping: step 1 comes from model 1, maybe another size)
            row = [io.resize_for_display(im, (h, w)) for im in steps]
            inp = io.resize_for_display(io.to_uint8(x[j]), (h, w))  # the encoder input, shown at output size
            io.write_png(out / "strips" / f"{name}.png", np.concatenate(row + [inp], axis=1))  # [h, (T+1)w, 3]
        if args.save_latents:  # last: its presence marks the image complete
            run_dir.keep_latents(name, np.stack([s[j] for s in res.step_latents]), int(res.steps_used[j]))
    return bad


def _finite_mask(res):
    """[B] bool: the image's final latents and every returned step are finite."""
    import numpy as np

    arrays = [res.latents, res.images, *res.step_latents, *res.step_images]
    return np.logical_and.reduce([np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1) for a in arrays])
