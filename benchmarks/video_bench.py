"""Measure ``restyle-rt video`` (issue 21) on a clip with known latents: per-frame quality of the cold start
(every frame 5 steps from the seeds) against the warm start (first frame 5 steps, later frames --iters-next 1/2/3
from the previous frame), latent smoothing, frames per second, memory over a long clip, and batch cost.

The clip: a smooth path through W (uniform Catmull-Rom through latents of the fitted model's distribution,
``tests/video_clips.py``) drawn by the model's own generator (exported synthesis graph, ONNX Runtime). For the
quality runs the frames are upscaled to the encoder's input size (Pillow bilinear, what ``preprocess`` does to a
small frame) before H.264, so that the codec's 4:2:0 chroma does not dominate at 16 px; the long clip is written at
its native size. Every run goes through ``invert_video`` (decode, loop, encode, latents file).

Per frame t (w_t the latents written, w*_t the truth, o_t = tensor2im(G(w_t)), g_t the drawn frame, uint8):
latent RMS |w_t - w*_t|, PSNR(o_t, g_t); jitter = RMS over t, pixels of (o_t - o_{t-1}) - (g_t - g_{t-1}) in
uint8 levels (the part of the output's frame-to-frame change the clip does not have), and the same on latents.

    python benchmarks/video_bench.py                      # the fitted 16 px fixture (tests/model_fixtures.py)
    python benchmarks/video_bench.py --artifacts demo/artifacts --ckpt demo/restyle_psp_church_fitted.pt \
        --name demo64 --long 0                            # restyle-rt demo's 64 px fitted model
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from video_clips import path_latents, render  # noqa: E402

from restyle_rt import Inverter  # noqa: E402
from restyle_rt.bench.runner import machine_info  # noqa: E402
from restyle_rt.runtime import io  # noqa: E402
from restyle_rt.workflows.animation import write_video  # noqa: E402
from restyle_rt.workflows.video import VideoSettings, invert_video  # noqa: E402

MODES = [  # (label, settings)
    ("cold 5", dict(cold=True, iters=5)),
    ("warm 5+1", dict(iters=5, iters_next=1)),
    ("warm 5+2", dict(iters=5, iters_next=2)),
    ("warm 5+3", dict(iters=5, iters_next=3)),
    ("warm 5+2, smooth 1", dict(iters=5, iters_next=2, smooth=1)),
    ("warm 5+2, smooth 2", dict(iters=5, iters_next=2, smooth=2)),
    ("cold 5, smooth 1", dict(cold=True, iters=5, smooth=1)),
]


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of uint8 [N, h, w, 3] arrays."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


def jitter(out: np.ndarray, ref: np.ndarray) -> float:
    """RMS of the temporal-difference error, in the arrays' units."""
    d = np.diff(out.astype(np.float64), axis=0) - np.diff(ref.astype(np.float64), axis=0)
    return float(np.sqrt(np.mean(d**2)))


def motion(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.diff(a.astype(np.float64), axis=0) ** 2)))


def quality_runs(inv, lat_true, frames, work: Path, fps: float) -> list:
    hw = inv.spec.input_hw
    clip = work / "clip.mp4"
    write_video(clip, (io.resize_bilinear(f, hw) for f in frames), fps)
    rows = []
    for label, kw in MODES:
        out, lat_path = work / "out.mp4", work / "out.latents.npy"
        cpu0 = time.process_time()
        rep = invert_video(inv, clip, out, VideoSettings(**kw), latents=lat_path, progress=False)
        cpu = time.process_time() - cpu0  # CPU seconds of this process: less sensitive to other jobs than wall time
        w = np.load(lat_path)
        imgs = np.stack([io.to_uint8(i) for i in inv.synthesize(w)])
        err = np.sqrt(((w - lat_true) ** 2).reshape(len(w), -1).mean(1))
        p = psnr(imgs, frames)
        rows.append(
            dict(
                mode=label,
                settings=kw,
                frames=rep.frames_out,
                seconds=round(rep.seconds, 2),
                fps=round(rep.frames_out / rep.seconds, 3),
                cpu_s_per_frame=round(cpu / rep.frames_out, 3),
                steps_per_frame=round(float(np.mean(rep.steps)), 3),
                latent_rms_mean=float(err.mean()),
                latent_rms_max=float(err.max()),
                latent_rms_mean_after_1=float(err[1:].mean()),
                psnr_mean=float(p.mean()),
                psnr_min=float(p.min()),
                psnr_mean_after_1=float(p[1:].mean()),
                jitter_img=jitter(imgs, frames),
                motion_img=motion(imgs),
                motion_clip=motion(frames),
                jitter_latent=jitter(w, lat_true),
                per_frame=dict(latent_rms=[round(float(e), 5) for e in err], psnr=[round(float(x), 2) for x in p]),
            )
        )
        r = rows[-1]
        print(
            f"  {label:<20} {r['fps']:6.2f} fps  {r['cpu_s_per_frame']:5.2f} CPU s/frame  steps/frame {r['steps_per_frame']:4.2f}  latent RMS mean "
            f"{r['latent_rms_mean']:.4f} max {r['latent_rms_max']:.4f}  PSNR mean {r['psnr_mean']:.2f} min "
            f"{r['psnr_min']:.2f}  jitter {r['jitter_img']:.3f} (latent {r['jitter_latent']:.4f})",
            flush=True,
        )
    return rows


def long_run(inv, ckpt, n: int, per_key: int, work: Path, fps: float, iters_next: int, threads) -> dict:
    """Write an n-frame clip at the generator's size, then invert it in a fresh, torch-free process
    (``--memory-run``) that records its RSS every 100 frames."""
    import subprocess

    lat = path_latents(ckpt, n, max(2, n // per_key + 1), seed=11)
    clip = work / "long.mp4"
    write_video(clip, (f for f in render(inv.backend, inv.profile, lat)), fps)
    cmd = [
        sys.executable,
        __file__,
        "--memory-run",
        str(clip),
        "--artifacts",
        str(inv.artifacts.root),
        "--long-iters-next",
        str(iters_next),
    ] + ([] if threads is None else ["--threads", str(threads)])
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(
        f"  long clip: {res['frames']} frames, {res['fps']} fps, RSS (frame, MiB, s) {res['rss_mib_by_frame']}",
        flush=True,
    )
    return res


def vm_hwm_mib():
    """Peak RSS of this process image (VmHWM, Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def memory_run(clip: str, artifacts: str, iters_next: int, threads) -> dict:
    """The long clip through ``invert_video`` with RSS sampled at frames 1, 10, 50 and every 100 (no torch here)."""
    import psutil

    proc, samples = psutil.Process(), []
    opts = {} if threads is None else {"threads": threads}
    with Inverter.load(artifacts, backend="ort", **opts) as inv, tempfile.TemporaryDirectory() as tmp:
        t0, cpu0 = time.perf_counter(), time.process_time()

        def watch(r):
            k = r.index + 1
            if k in (1, 10, 50) or k % 100 == 0:
                samples.append((k, round(proc.memory_info().rss / 2**20, 1), round(time.perf_counter() - t0, 1)))

        kw = dict(iters=5, iters_next=iters_next)
        rep = invert_video(
            inv,
            clip,
            Path(tmp) / "out.mp4",
            VideoSettings(**kw),
            latents=Path(tmp) / "out.latents.npy",
            progress=False,
            on_frame=watch,
        )
        cpu = time.process_time() - cpu0
    rss = {f: m for f, m, _ in samples}
    return dict(
        frames=rep.frames_out,
        settings=kw,
        seconds=round(rep.seconds, 1),
        fps=round(rep.frames_out / rep.seconds, 3),
        cpu_s_per_frame=round(cpu / rep.frames_out, 3),
        rss_mib_by_frame=samples,
        rss_growth_100_to_end_mib=round(samples[-1][1] - rss.get(100, samples[0][1]), 1),
        peak_rss_mib=vm_hwm_mib(),  # this process image's peak (ru_maxrss would carry the parent's over exec)
        torch_imported="torch" in sys.modules,
    )


def batch_cost(inv, reps: int = 5) -> dict:
    """Wall and CPU seconds per image of one loop step (encode + synthesize) at batch 1, 2, 4 .. profile max."""
    art, out = inv.artifacts, {}
    hw = inv.spec.input_hw
    b = 1
    while b <= inv.profile.max:
        x = np.zeros((b, 3, *hw), np.float32)
        w = np.repeat(art.latent_avg[None], b, 0)
        y = np.repeat(art.avg_feedback[None], b, 0)
        inv.backend.synthesize(inv.backend.encode(x, y, w))  # warm-up
        ts, cs = [], []
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            inv.backend.synthesize(inv.backend.encode(x, y, w))
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        out[b] = dict(wall_s=round(float(np.median(ts)) / b, 4), cpu_s=round(float(np.median(cs)) / b, 4))
        b *= 2
    print(f"  loop step per image by batch: {out}", flush=True)
    return out


def markdown(result: dict) -> str:
    """The recorded result as the tables of benchmarks/video.md."""
    lines = []
    for per_key, sp in result["speeds"].items():
        lines += [
            f"Clip: {len(sp['runs'][0]['per_frame']['psnr'])} frames, {per_key} frames per key latent "
            f"(latent step per frame RMS {sp['latent_step_rms']:.4f})",
            "",
            "| mode | steps/frame | latent RMS mean / max | PSNR mean / min (dB) | jitter img (levels) / "
            "latent | fps (wall) | CPU s/frame |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sp["runs"]:
            cpu = r.get("cpu_s_per_frame")
            lines.append(
                f"| {r['mode']} | {r['steps_per_frame']:.2f} | {r['latent_rms_mean']:.4f} / "
                f"{r['latent_rms_max']:.4f} | {r['psnr_mean']:.2f} / {r['psnr_min']:.2f} | "
                f"{r['jitter_img']:.3f} / {r['jitter_latent']:.4f} | {r['fps']:.2f} | "
                f"{'-' if cpu is None else f'{cpu:.2f}'} |"
            )
        lines.append("")
    b = result.get("batch_step_per_image") or result.get("batch_step_seconds_per_image")
    if b:
        lines += [
            "Loop step (encode + synthesize) per image by batch: "
            + ", ".join(
                f"batch {k}: {v['wall_s'] if isinstance(v, dict) else v} s wall"
                + (f", {v['cpu_s']} CPU s" if isinstance(v, dict) else "")
                for k, v in b.items()
            ),
            "",
        ]
    if "long" in result:
        lg = result["long"]
        lines += [
            f"Long clip: {lg['frames']} frames, {lg['settings']}, {lg['fps']} fps wall"
            + (f", {lg['cpu_s_per_frame']} CPU s/frame" if "cpu_s_per_frame" in lg else "")
            + f"; RSS growth frame 100 -> end {lg['rss_growth_100_to_end_mib']} MiB, peak RSS "
            f"{lg.get('peak_rss_mib')} MiB",
            "",
            "| frame | " + " | ".join(str(f) for f, _, _ in lg["rss_mib_by_frame"]) + " |",
            "| --- |" + " --- |" * len(lg["rss_mib_by_frame"]),
            "| RSS MiB | " + " | ".join(str(m) for _, m, _ in lg["rss_mib_by_frame"]) + " |",
            "| wall s | " + " | ".join(str(t) for _, _, t in lg["rss_mib_by_frame"]) + " |",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", help="fitted artifacts (default: the 16 px test fixture)")
    ap.add_argument("--ckpt", help="its checkpoint (for the true latents)")
    ap.add_argument("--name", default="fitted16")
    ap.add_argument("--frames", type=int, default=48, help="quality clip length")
    ap.add_argument(
        "--per-key",
        type=int,
        nargs="+",
        default=[8, 24, 48],
        help="frames between key latents (clip speeds: fewer = faster motion)",
    )
    ap.add_argument("--long", type=int, default=1000, help="frames of the memory run (0: skip)")
    ap.add_argument("--long-iters-next", type=int, default=2)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="default benchmarks/results/video_NAME.json")
    ap.add_argument("--memory-run", metavar="CLIP", help=argparse.SUPPRESS)  # the long run's child process
    ap.add_argument("--report", metavar="JSON", help="print a recorded result as markdown tables and exit")
    args = ap.parse_args(argv)
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return 0
    if args.memory_run:
        print(json.dumps(memory_run(args.memory_run, args.artifacts, args.long_iters_next, args.threads)))
        return 0
    if args.artifacts is None:
        from model_fixtures import fitted_artifacts_path, fitted_checkpoint_path

        args.artifacts, args.ckpt = str(fitted_artifacts_path()), str(fitted_checkpoint_path())
    opts = {} if args.threads is None else {"threads": args.threads}
    result = dict(
        command="python " + " ".join(shlex.quote(a) for a in sys.argv),
        machine=machine_info(args.threads or 0),
        artifacts=args.artifacts,
        speeds={},
    )
    with Inverter.load(args.artifacts, backend="ort", **opts) as inv, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result["spec"] = dict(
            n_styles=inv.spec.n_styles, image_hw=list(inv.spec.image_hw), input_hw=list(inv.spec.input_hw)
        )
        for per_key in args.per_key:
            n_keys = max(2, round((args.frames - 1) / per_key) + 1)
            lat = path_latents(args.ckpt, args.frames, n_keys)
            frames = render(inv.backend, inv.profile, lat)
            step = float(np.sqrt(np.mean(np.diff(lat, axis=0) ** 2)))
            print(
                f"clip: {args.frames} frames, {per_key} frames per key ({n_keys} keys), latent step per frame "
                f"RMS {step:.4f}",
                flush=True,
            )
            result["speeds"][str(per_key)] = dict(
                n_keys=n_keys, latent_step_rms=step, runs=quality_runs(inv, lat, frames, work, args.fps)
            )
        result["batch_step_per_image"] = batch_cost(inv)
        if args.long:
            result["long"] = long_run(inv, args.ckpt, args.long, 50, work, args.fps, args.long_iters_next, args.threads)
    result["machine"]["load_avg_end"] = machine_info(0)["load_avg"]
    path = Path(args.json or ROOT / "benchmarks" / "results" / f"video_{args.name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
