"""Inversion quality per loop step: PSNR, SSIM and MS-SSIM against the inputs, and (given the true latents) the
latent RMS error. Torch-free; the metrics are :mod:`restyle_rt.metrics` (NumPy).

What is compared, per image and per step t = 0..N:

* the inversion: the generator's output at step t through the official ``tensor2im`` (clip, x255, truncate to
  uint8: the PNG ``restyle-rt invert`` writes), at the generator's output size (``spec.image_hw``);
* the input: the decoded file (EXIF orientation applied, as the runtime reads it), resized to that output size
  with Pillow's bilinear resize, the resize the runtime applies to the encoder input (the official
  ``transforms.Resize``); an input already at the output size (an FFHQ 1024 photo on a 1024 model) is compared
  unresized. (The official ``scripts/calc_losses_on_images.py`` compares the saved inversion and the input at one
  resolution too, 256 px, with LPIPS or L2; comparing at the output size uses every pixel the generator draws and
  needs no resize of the inversion.)
* step 0 is the loop's start, before any encoder step: ``latent_avg`` and its image ``G(latent_avg)`` (the "no
  move" baseline); steps 1..N are the loop's outputs.
* latent RMS error (with true latents): ``sqrt(mean((w_t - w_true)^2))`` over the [S, 512] W+ code of one image.

Means are over images, per step. LPIPS and the identity similarity of the official evaluation need pretrained
networks (AlexNet LPIPS weights, a CurricularFace IR-101) that this runtime neither ships nor downloads: they are not
computed, and :data:`NOT_COMPUTED` says so wherever the results are written.
"""

from __future__ import annotations

import csv
import io as _io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import metrics
from ..errors import InputError
from ..runtime import io

log = logging.getLogger("restyle_rt")

METRICS = ("latent_rms", "psnr_db", "ssim", "ms_ssim")
NOT_COMPUTED = {
    "lpips": "not computed: LPIPS needs pretrained AlexNet/VGG weights (the official calc_losses_on_images.py), which "
    "restyle-rt does not ship or download",
    "id_similarity": "not computed: the identity loss needs a pretrained CurricularFace IR-101 (official "
    "calc_id_loss_parallel.py), which restyle-rt does not ship or download",
}
STEP_0 = "step 0 is the loop's start: latent_avg and G(latent_avg), before any encoder step (no move)"
COMPARISON = (
    "inversion: tensor2im uint8 of the generator output at its own size; input: decoded (EXIF applied) "
    "and resized to that size with Pillow BILINEAR (the runtime's resize)"
)
MEAN_ROW = "(mean)"  # the image column of the mean rows in eval.csv

ImageSource = str | os.PathLike | np.ndarray


@dataclass
class EvalResult:
    """Per image and per step t = 0..N (index 0: the start, ``latent_avg``) quality figures.

    Attributes:
        names: one per image, in order.
        n_iters: N, the steps run.
        psnr_db, ssim, ms_ssim: [n_images, N + 1] float64 (PSNR ``inf``: identical images; NaN: the step's image
            is not finite).
        latent_rms: [n_images, N + 1] float64 with true latents, else None.
        compare_hw: (h, w) the images were compared at (the generator's output size).
        ms_ssim_scales: the MS-SSIM scales used (5, or as many as ``compare_hw`` allows).
        backend: the backend's name.
    """

    names: list[str]
    n_iters: int
    psnr_db: np.ndarray
    ssim: np.ndarray
    ms_ssim: np.ndarray
    latent_rms: np.ndarray | None
    compare_hw: tuple[int, int]
    ms_ssim_scales: int
    backend: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> list[int]:
        """0..N."""
        return list(range(self.n_iters + 1))

    def per_image(self) -> dict[str, np.ndarray]:
        """The metrics present: name -> [n_images, N + 1]."""
        return {m: a for m in METRICS if (a := getattr(self, m)) is not None}

    def mean(self) -> dict[str, np.ndarray]:
        """Mean over images per step: name -> [N + 1] (``inf`` PSNR stays inf; a NaN propagates)."""
        with np.errstate(invalid="ignore"):
            return {m: a.mean(axis=0) for m, a in self.per_image().items()}

    def table(self) -> str:
        """The per-step table of the means, one row per step (step 0 marked as the start)."""
        means = self.mean()
        cols = list(means)
        width = {"latent_rms": 10, "psnr_db": 8, "ssim": 7, "ms_ssim": 7}
        lines = ["step  " + "  ".join(f"{c:>{width[c]}}" for c in cols)]
        for t in self.steps:
            cells = "  ".join(_fmt(c, means[c][t], width[c]) for c in cols)
            lines.append(f"{t:>4}  {cells}" + ("  (start: latent_avg, no move)" if t == 0 else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: steps, means, per-image figures and what was compared (non-finite numbers as null)."""
        return {
            "n_images": len(self.names),
            "n_iters": self.n_iters,
            "backend": self.backend,
            "steps": self.steps,
            "step_0": STEP_0,
            "compared_at_hw": list(self.compare_hw),
            "comparison": COMPARISON,
            "ms_ssim_scales": self.ms_ssim_scales,
            "metrics": list(self.per_image()),
            "mean": {m: _json_list(v) for m, v in self.mean().items()},
            "images": [
                {"name": n, **{m: _json_list(a[i]) for m, a in self.per_image().items()}}
                for i, n in enumerate(self.names)
            ],
            "not_computed": dict(NOT_COMPUTED),
            **self.extra,
        }

    def csv_text(self) -> str:
        """CSV, one row per image per step (``image,step,<metrics>``), then the means (image ``(mean)``)."""
        per = self.per_image()
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "step", *per])
        for i, n in enumerate(self.names):
            for t in self.steps:
                w.writerow([n, t, *(_csv(a[i, t]) for a in per.values())])
        means = self.mean()
        for t in self.steps:
            w.writerow([MEAN_ROW, t, *(_csv(v[t]) for v in means.values())])
        return buf.getvalue()


def _fmt(metric: str, v: float, width: int) -> str:
    if not math.isfinite(v):
        return f"{v:>{width}}"
    digits = {"latent_rms": 4, "psnr_db": 2}.get(metric, 4)
    return f"{v:>{width}.{digits}f}"


def _json_list(a) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, np.float64).ravel()]


def _csv(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else str(float(v))


def check_true_latents(true_latents, n_images: int, n_styles: int, what: str = "true latents") -> np.ndarray:
    """The true latents as float64 [n_images, n_styles, 512].

    Raises:
        InputError: another shape or count (both named), or non-finite values.
    """
    a = np.asarray(true_latents)
    if a.ndim != 3 or a.shape[1:] != (n_styles, 512) or a.dtype.kind != "f":
        raise InputError(
            f"{what}: expected a float array [N, {n_styles}, 512] (one W+ code per image, this "
            f"model's {n_styles} styles), got {a.dtype} {list(a.shape)}"
        )
    if a.shape[0] != n_images:
        raise InputError(
            f"{what}: {a.shape[0]} latents for {n_images} image(s); give one per image, in the order "
            "the images are listed (each directory's files sorted by path)"
        )
    if not np.isfinite(a).all():
        raise InputError(f"{what}: non-finite values (NaN/Inf)")
    return a.astype(np.float64)


def load_true_latents(path: os.PathLike, n_images: int, n_styles: int) -> np.ndarray:
    """Read a ``.npy`` of true latents [N, S, 512] (:func:`check_true_latents`).

    Raises:
        InputError: unreadable, or the wrong shape, count or values (the file named).
    """
    p = Path(os.fsdecode(path))
    try:
        a = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"--true-latents {p}: cannot be read as a .npy array ({e})") from None
    return check_true_latents(a, n_images, n_styles, f"--true-latents {p}")


def _decode(src: ImageSource, i: int) -> np.ndarray:
    """[h, w, 3] uint8 RGB of a path (as the runtime reads it) or an array."""
    if isinstance(src, np.ndarray):
        if src.dtype != np.uint8 or src.ndim != 3 or src.shape[2] != 3:
            raise InputError(f"image {i}: expected an [H, W, 3] uint8 RGB array, got {src.dtype} {list(src.shape)}")
        return src
    return io.read_image(src)


def evaluate(
    inverter,
    images: Sequence[ImageSource],
    n_iters: int = 5,
    true_latents=None,
    *,
    names: Sequence[str] | None = None,
    batch: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run ``n_iters`` ReStyle steps on every image and measure each step against the input.

    Args:
        inverter: a loaded :class:`~restyle_rt.runtime.api.Inverter`.
        images: paths or [h, w, 3] uint8 RGB arrays.
        n_iters: N >= 1 steps (every step runs: no early exit).
        true_latents: optional [n_images, S, 512], one per image in order: adds ``latent_rms``.
        names: one per image (default: the file stems, or ``000``, ``001``, ...).
        batch: images per :meth:`Inverter.invert` call (default: the artifacts' profile max).
        progress: called with the number of images done after each batch.

    Returns:
        :class:`EvalResult`; step 0 is the start (``latent_avg`` and ``G(latent_avg)``).

    Raises:
        InputError: no images, an unreadable image (named), bad ``n_iters`` / ``batch`` / ``true_latents``, or a
            generator output smaller than the 11x11 SSIM window.
    """
    images = list(images)
    n = len(images)
    if n == 0:
        raise InputError("no images to evaluate")
    if isinstance(n_iters, bool) or not isinstance(n_iters, (int, np.integer)) or n_iters < 1:
        raise InputError(f"n_iters must be an int >= 1, got {n_iters!r}")
    batch = inverter.profile.max if batch is None else int(batch)
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    if names is None:
        names = [
            Path(os.fsdecode(s)).stem if not isinstance(s, np.ndarray) else f"{i:03d}" for i, s in enumerate(images)
        ]
    if len(names) != n:
        raise InputError(f"{len(names)} names for {n} images")
    spec = inverter.spec
    truth = None if true_latents is None else check_true_latents(true_latents, n, spec.n_styles)
    hw = tuple(int(v) for v in spec.image_hw)
    scales = metrics.ms_ssim_scales(hw)
    if scales == 0:
        raise InputError(f"the generator's {hw[0]}x{hw[1]} output is smaller than the 11x11 SSIM window")
    if scales < len(metrics.MS_SSIM_WEIGHTS):
        log.info("MS-SSIM on %dx%d images: %d of 5 scales fit (weights renormalised)", hw[0], hw[1], scales)

    shape = (n, n_iters + 1)
    psnr, ssim, msssim = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    lat_err = None if truth is None else np.full(shape, np.nan)
    avg_lat = np.asarray(inverter.artifacts.latent_avg, np.float32)  # [S, 512]
    avg_img = inverter.synthesize(avg_lat[None])[0]  # [3, h, w]

    def score(i: int, t: int, img: np.ndarray, ref: np.ndarray) -> None:
        if not np.isfinite(img).all():
            return  # NaN: the step's image is not finite (Inverter.invert has warned)
        out = io.to_uint8(img)  # [h, w, 3]
        if out.shape[:2] != hw:
            raise InputError(f"the generator gave {list(out.shape[:2])} images, the artifacts' spec says {list(hw)}")
        psnr[i, t] = metrics.psnr(out, ref)
        ssim[i, t] = metrics.ssim(out, ref)
        msssim[i, t] = metrics.ms_ssim(out, ref, scales=scales)

    for start in range(0, n, batch):
        stop = min(start + batch, n)
        originals = [_decode(images[i], i) for i in range(start, stop)]
        refs = [io.resize_bilinear(o, hw) for o in originals]  # [h, w, 3] uint8, compared against
        x = inverter.preprocess(originals)  # [b, 3, H, W]
        del originals
        res = inverter.invert(x, n_iters=n_iters, return_steps=True)
        for j, i in enumerate(range(start, stop)):
            score(i, 0, avg_img, refs[j])
            for t in range(1, n_iters + 1):
                score(i, t, res.step_images[t - 1][j], refs[j])
            if truth is not None:
                steps = [avg_lat] + [res.step_latents[t - 1][j] for t in range(1, n_iters + 1)]
                lat_err[i] = [np.sqrt(np.mean((np.asarray(w, np.float64) - truth[i]) ** 2)) for w in steps]
        if progress is not None:
            progress(stop - start)
    return EvalResult(
        names=[str(s) for s in names],
        n_iters=int(n_iters),
        psnr_db=psnr,
        ssim=ssim,
        ms_ssim=msssim,
        latent_rms=lat_err,
        compare_hw=hw,
        ms_ssim_scales=scales,
        backend=inverter.backend.name,
    )


def check_plot_available() -> None:
    """Fail early when ``--plot`` cannot be drawn.

    Raises:
        InputError: matplotlib is not installed (naming the ``[bench]`` extra).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'restyle-rt[bench]' (or leave out --plot)") from None


def plot(result: EvalResult, path: os.PathLike) -> Path:
    """Write per-step curves (one panel per metric: every image thin, the mean bold) as a PNG at ``path``.

    Raises:
        InputError: matplotlib is not installed.
    """
    check_plot_available()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from .. import fsio

    per, means = result.per_image(), result.mean()
    labels = {
        "latent_rms": "latent RMS error to the truth",
        "psnr_db": "PSNR (dB)",
        "ssim": "SSIM",
        "ms_ssim": f"MS-SSIM ({result.ms_ssim_scales} scale{'s' if result.ms_ssim_scales > 1 else ''})",
    }
    fig = Figure(figsize=(4.2 * len(per), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(per), squeeze=False)[0]
    steps = np.asarray(result.steps)
    for ax, (m, a) in zip(axes, per.items()):
        for row in a:
            ax.plot(steps, np.where(np.isfinite(row), row, np.nan), color="0.75", lw=0.8)
        ax.plot(
            steps,
            np.where(np.isfinite(means[m]), means[m], np.nan),
            "o-",
            color="C0",
            lw=2,
            label=f"mean of {len(result.names)}",
        )
        if m == "latent_rms" and np.all(a[np.isfinite(a)] > 0):
            ax.set_yscale("log")
        ax.set_xlabel("step (0 = latent_avg, no move)")
        ax.set_title(labels[m], fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    h, w = result.compare_hw
    fig.suptitle(f"Inversion quality per step ({result.backend}, {h}x{w}; LPIPS and ID not computed)", fontsize=10)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return fsio.write_bytes(Path(path), buf.getbuffer())
