"""The real ReStyle loop, replayed for calibration: every step's encoder and synthesis inputs, and per-step accuracy.

Loop-aware calibration: at step t the encoder sees ``(image, feedback_{t-1}, latent_{t-1})`` (the average image and
``latent_avg`` at t = 1) and the synthesis sees ``latent_t``; :func:`record_feeds` runs the FP32 graphs over the
calibration images and keeps those inputs for every step, so the activation statistics cover the whole loop.
``steps=(1,)`` gives the step-1-only data a per-call calibration would use (kept for the side-by-side measure).
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..artifacts import Artifacts
from ..parity import compare

log = logging.getLogger("restyle_rt")


def session(path: Path | bytes, threads: int = 0):
    """A CPU ONNX Runtime session for ``path`` or serialized model bytes (``threads`` 0 = ORT's default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


@dataclass
class LoopFeeds:
    """Per-step graph inputs of the FP32 loop over a batch of images, and its per-step outputs.

    Attributes:
        encoder: per step t = 1..T, the encoder feed ``{image, feedback, latent}`` (arrays [N, ...]).
        synthesis: per step, the synthesis feed ``{latent}`` ([N, S, 512]).
        latents: per step, the FP32 loop's latent_t [N, S, 512] (the reference for accuracy).
        images: per step, the FP32 loop's image_t [N, 3, h, w].
    """

    encoder: list[dict[str, np.ndarray]] = field(default_factory=list)
    synthesis: list[dict[str, np.ndarray]] = field(default_factory=list)
    latents: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


def run_loop(art: Artifacts, enc, syn, x: np.ndarray, steps: int, batch: int = 4) -> LoopFeeds:
    """Run ``steps`` loop iterations with sessions ``enc``/``syn`` on ``x`` [N, 3, H, W], in chunks of ``batch``."""
    out = LoopFeeds()
    n, s = x.shape[0], art.spec.n_styles
    lat = np.ascontiguousarray(np.broadcast_to(art.latent_avg, (n, s, 512)), dtype=np.float32)  # [N, S, 512]
    fb = np.ascontiguousarray(np.broadcast_to(art.avg_feedback, (n, 3, *art.spec.input_hw)), dtype=np.float32)
    for _ in range(steps):
        out.encoder.append({"image": x, "feedback": fb, "latent": lat})
        lat = np.concatenate(
            [
                enc.run(
                    ["latent_next"],
                    {"image": x[i : i + batch], "feedback": fb[i : i + batch], "latent": lat[i : i + batch]},
                )[0]
                for i in range(0, n, batch)
            ]
        )  # [N, S, 512]
        out.synthesis.append({"latent": lat})
        parts = [syn.run(["image", "feedback"], {"latent": lat[i : i + batch]}) for i in range(0, n, batch)]
        img = np.concatenate([p[0] for p in parts])  # [N, 3, h, w]
        fb = np.concatenate([p[1] for p in parts])  # [N, 3, H, W]
        out.latents.append(lat)
        out.images.append(img)
    return out


class FeedReader(CalibrationDataReader):
    """Yields recorded feeds of the chosen steps in batches of ``batch`` (ORT's calibration data reader).

    Args:
        feeds: per-step feed dicts (``LoopFeeds.encoder`` or ``.synthesis``).
        steps: 1-based steps to replay (default all): ``(1,)`` is step-1-only calibration.
        batch: rows per yielded feed.
    """

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], steps: Iterable[int] | None = None, batch: int = 4):
        chosen = range(1, len(feeds) + 1) if steps is None else steps
        self.items = []
        for t in chosen:
            f = feeds[t - 1]
            n = next(iter(f.values())).shape[0]
            self.items += [
                {k: np.ascontiguousarray(v[i : i + batch]) for k, v in f.items()} for i in range(0, n, batch)
            ]
        self._i = 0

    def __len__(self) -> int:
        return len(self.items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.items):
            return None
        self._i += 1
        return self.items[self._i - 1]

    def rewind(self) -> None:
        self._i = 0

    def chunks(self, size: int) -> Iterable[FeedReader]:
        """Sub-readers of ``size`` items: the histogram calibrators hold every output of one collect call."""
        for i in range(0, len(self.items), size):
            sub = FeedReader([], steps=())
            sub.items = self.items[i : i + size]
            yield sub


def step_accuracy(ref: LoopFeeds, got: LoopFeeds) -> list[dict]:
    """Per step: latent rel-L2 and image PSNR / rel-L2 of ``got`` against the FP32 reference loop (PSNR None when
    the images are identical)."""
    rows = []
    for t, (rl, ri, gl, gi) in enumerate(zip(ref.latents, ref.images, got.latents, got.images), start=1):
        lat, img = compare(gl, rl), compare(gi, ri)
        psnr = img.psnr_db if np.isfinite(img.psnr_db) else None  # None: identical (JSON has no infinity)
        rows.append({"step": t, "latent_rel_l2": lat.rel_l2, "image_rel_l2": img.rel_l2, "image_psnr_db": psnr})
    return rows


def meets_bar(rows: list[dict], bar: dict[str, float]) -> bool:
    """True when every step's latent rel-L2 and image PSNR are within ``bar`` (``latent_rel_l2``,
    ``image_psnr_db``)."""
    return bool(rows) and all(
        r["latent_rel_l2"] <= bar["latent_rel_l2"]
        and (r["image_psnr_db"] is None or r["image_psnr_db"] >= bar["image_psnr_db"])
        for r in rows
    )


@contextlib.contextmanager
def quiet_stdout():
    """ORT's histogram collector prints progress to stdout; library code must not."""
    with contextlib.redirect_stdout(_io.StringIO()):
        yield
