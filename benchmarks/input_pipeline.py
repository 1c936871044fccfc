"""`restyle-rt invert` on a folder of 12 MP JPEGs, end to end, with and without the input pipeline (issue 20).

Writes N synthetic 4000 x 3000 photos (smooth multi-octave noise plus fine grain, JPEG quality 90: ~3.5 MB each,
about what a phone writes) to a temporary folder, then times, on the given artifacts:

* ``decode``: ``io.preprocess_file`` alone, serial, per image (what the loop waited for before the pipeline);
* ``loop``: ``Inverter.invert`` on the preprocessed batches (decode not timed): the throughput to reach;
* ``invert --workers 0`` (serial reading, as before) and ``invert --workers W`` (the pipeline; default: the CLI's
  default), each a fresh ``restyle-rt invert`` process, images/s as the command prints it (model load included,
  as a user sees it: use enough photos that it does not matter, ``load_s`` in the JSON); ``--jpeg-draft`` adds a
  run with reduced-scale JPEG decoding.

Prints one markdown row per run with the machine (``runtime/hostinfo``) and, with ``--json OUT``, the numbers.
Run it alone on the machine: other load changes every figure. Example::

    python3 benchmarks/input_pipeline.py ~/.cache/restyle-rt/presets/church-256/artifacts --n 32 --batch 4

``--draft-accuracy`` measures instead what ``--jpeg-draft`` changes (no timing): per image the encoder input's
max / mean difference in 0..255 levels, then the latents' rel-L2 per step and the final image's PSNR, draft
against exact decoding, on the same artifacts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from restyle_rt import Inverter
from restyle_rt.parity import compare
from restyle_rt.runtime import io, pipeline
from restyle_rt.runtime.hostinfo import cpu_model

SIZE = (4000, 3000)  # (w, h): 12 MP


def synthetic_photo(seed: int, size=SIZE) -> np.ndarray:
    """[h, w, 3] uint8: smooth noise over five octaves (blobs down to ~2 px) plus a little grain."""
    w, h = size
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for k, cells in enumerate((8, 32, 128, 512, 2000)):
        gw, gh = max(2, cells), max(2, cells * h // w)
        grid = rng.normal(0, 1, (gh, gw, 3)).astype(np.float32)
        up = [np.asarray(Image.fromarray(grid[..., c]).resize((w, h), Image.BILINEAR)) for c in range(3)]
        acc += np.stack(up, -1) / (1.0 + 0.5 * k)
    acc = (acc - acc.mean()) / acc.std()
    acc += rng.normal(0, 0.05, acc.shape).astype(np.float32)
    return np.clip(128 + 45 * acc, 0, 255).astype(np.uint8)


def write_photos(folder: Path, n: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"photo{i:04d}.jpg"
        Image.fromarray(synthetic_photo(i)).save(p, quality=90)
        paths.append(p)
    return paths


def time_decode(paths, hw, jpeg_draft=False) -> float:
    t = time.perf_counter()
    for p in paths:
        io.preprocess_file(p, hw, jpeg_draft)
    return (time.perf_counter() - t) / len(paths)


def time_loop(art, backend, paths, batch, iters) -> float:
    """Images/s of ``Inverter.invert`` alone on the preprocessed images, one warm-up batch first."""
    with Inverter.load(art, backend=backend, verify=False, probe_batch=batch) as inv:
        hw, batch = inv.spec.input_hw, batch or inv.profile.max
        x = np.stack([io.preprocess_file(p, hw) for p in paths])  # [N, 3, H, W]
        inv.invert(x[:batch], n_iters=iters)
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            inv.invert(x[i : i + batch], n_iters=iters)
        return len(x) / (time.perf_counter() - t)


def time_invert(art, backend, paths, batch, iters, workers, extra=()) -> dict:
    """One fresh ``restyle-rt invert`` process; its own images/s (from the summary line) and the wall time."""
    with tempfile.TemporaryDirectory(prefix="restyle-rt-bench-out-") as out:
        cmd = [
            sys.executable,
            "-m",
            "restyle_rt.cli",
            "invert",
            str(art),
            *map(str, paths),
            "--out",
            out,
            "--iters",
            str(iters),
            "--backend",
            backend,
            "--no-verify",
            "--workers",
            str(workers),
            *extra,
        ]
        if batch:
            cmd += ["--batch", str(batch)]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
    m = re.search(r"inverted (\d+) image\(s\).* in ([\d.]+) s, ([\d.]+) images/s", r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit(f"invert failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return {
        "workers": workers,
        "images": int(m.group(1)),
        "seconds": float(m.group(2)),
        "images_per_s": float(m.group(3)),
        "wall_s": wall,
        "args": list(extra),
    }


def draft_accuracy(art, backend, paths, iters) -> list:
    rows = []
    with Inverter.load(art, backend=backend, verify=False) as inv:
        hw = inv.spec.input_hw
        exact = np.stack([io.preprocess_file(p, hw) for p in paths])
        draft = np.stack([io.preprocess_file(p, hw, jpeg_draft=True) for p in paths])
        a = inv.invert(exact, n_iters=iters, return_steps=True)
        b = inv.invert(draft, n_iters=iters, return_steps=True)
        for i, p in enumerate(paths):
            d = np.abs(draft[i] - exact[i]) * 127.5
            with Image.open(p) as im:
                scale = io._draft_scale(im, (max(hw),) * 2)
            rows.append(
                {
                    "image": p.name,
                    "draft_scale": f"1/{scale}",
                    "input_max_levels": round(float(d.max()), 2),
                    "input_mean_levels": round(float(d.mean()), 3),
                    "latent_rel_l2_per_step": [
                        compare(b.step_latents[t][i], a.step_latents[t][i]).rel_l2 for t in range(iters)
                    ],
                    "final_image_psnr_db": compare(b.images[i], a.images[i]).psnr_db,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts")
    ap.add_argument("--n", type=int, default=16, help="photos (default 16)")
    ap.add_argument("--batch", type=int, default=None, help="--batch for invert (default: the profile max)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--workers", type=int, default=None, help="pipelined run's --workers (default: the CLI's)")
    ap.add_argument("--jpeg-draft", action="store_true", help="also time a pipelined run with --jpeg-draft")
    ap.add_argument("--draft-accuracy", action="store_true", help="measure --jpeg-draft's effect instead")
    ap.add_argument("--photos", type=Path, help="use (and keep) this folder of photos; written if empty")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="restyle-rt-bench-photos-") as tmp:
        folder = args.photos or Path(tmp)
        paths = sorted(folder.glob("*.jpg"))[: args.n] if folder.is_dir() else []
        if len(paths) < args.n:
            paths = write_photos(folder, args.n)
        mb = np.mean([p.stat().st_size for p in paths]) / 1e6
        machine = {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        }
        if args.draft_accuracy:
            rows = draft_accuracy(args.artifacts, args.backend, paths, args.iters)
            print("| image | draft scale | input max / mean (levels) | latent rel-L2 step 1 .. last | final PSNR |")
            print("|---|---|---|---|---|")
            for r in rows:
                lat = r["latent_rel_l2_per_step"]
                print(
                    f"| {r['image']} | {r['draft_scale']} | {r['input_max_levels']} / {r['input_mean_levels']} | "
                    f"{lat[0]:.2e} .. {lat[-1]:.2e} | {r['final_image_psnr_db']:.1f} dB |"
                )
            result = {"machine": machine, "mode": "draft-accuracy", "jpeg_mb": mb, "rows": rows}
        else:
            t = time.perf_counter()
            with Inverter.load(args.artifacts, backend=args.backend, verify=False) as inv:
                hw = inv.spec.input_hw
            load_s = time.perf_counter() - t  # inside invert's figures: subtract it for short runs
            dec = time_decode(paths, hw)
            dec_draft = time_decode(paths, hw, jpeg_draft=True)
            loop = time_loop(args.artifacts, args.backend, paths, args.batch, args.iters)
            workers = pipeline.default_workers() if args.workers is None else args.workers
            runs = [
                time_invert(args.artifacts, args.backend, paths, args.batch, args.iters, 0),
                time_invert(args.artifacts, args.backend, paths, args.batch, args.iters, workers),
            ]
            if args.jpeg_draft:
                runs.append(
                    time_invert(args.artifacts, args.backend, paths, args.batch, args.iters, workers, ["--jpeg-draft"])
                )
            print(
                "| CPU (usable cores) | artifacts | backend | batch | iters | photos | decode+resize ms/img "
                "(draft) | loop alone img/s | invert --workers 0 | invert --workers W | pipelined / loop |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            piped = runs[1]
            print(
                f"| {machine['cpu']} ({machine['usable_cpus']}) | {Path(args.artifacts).name} | {args.backend} | "
                f"{args.batch or 'max'} | {args.iters} | {len(paths)} x 12 MP ({mb:.1f} MB) | {dec * 1e3:.0f} "
                f"({dec_draft * 1e3:.0f}) | {loop:.3f} | {runs[0]['images_per_s']:.3f} | "
                f"{piped['images_per_s']:.3f} (W={workers}) | {piped['images_per_s'] / loop:.2f} |"
            )
            if args.jpeg_draft:
                print(f"\n--jpeg-draft, W={workers}: {runs[2]['images_per_s']:.3f} images/s")
            result = {
                "machine": machine,
                "command": sys.argv,
                "jpeg_mb": mb,
                "decode_s": dec,
                "decode_draft_s": dec_draft,
                "loop_images_per_s": loop,
                "invert": runs,
                "load_s": load_s,
                "load_avg": os.getloadavg(),
            }
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
