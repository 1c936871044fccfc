"""Video: invert (and edit) a clip frame by frame, each frame warm-started from the previous one. Torch-free.

Per frame t (x_t its preprocessed frame, :func:`restyle_rt.runtime.loop.host_loop` on the backend's
``encode``/``synthesize``)::

    frame 1 (and the first after a skipped frame): n_first steps from the seeds (latent_avg, avg_feedback)
    frame t > 1: n_next steps from frame t-1's final (w, y): w_t,0 = w_{t-1}, y_t,0 = y_{t-1} = G(w_{t-1}) pooled

The state a warm start continues from is what the encoder sees at a late step of the cold loop anyway (its own
latent and the pooled image of it); consecutive frames differ little, so a few steps from there reach what the cold
loop reaches in ``n_first``. ``cold=True`` runs every frame from the seeds (the official per-frame inversion).

Optional, in this order: FFHQ alignment per frame with its landmarks smoothed over time (an exponential moving
average, so the crop does not jitter; a frame without a face is skipped and the next one starts cold), temporal
smoothing of the latents (a centred triangular window of radius r: frame t is written once frame t + r is
inverted, so the latency is r frames and r + 1 frames are held), InterFaceGAN edits ``w + sum_i f_i d_i``, and a
side-by-side layout ``[input, inversion, edit]``.

Streaming: decode -> (align) -> preprocess -> loop -> (smooth, edit) -> encode, one frame at a time; the clip is
never held (memory is constant over a clip's length, measured in ``benchmarks/video.md``). The latents go to a
``.npy`` row by row. The video and the latents are written under temporary names and renamed when complete: a
failure (bad frame, Ctrl-C) leaves neither.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import InputError
from ..runtime import io
from ..runtime.loop import check_iters, host_loop, pad_to

log = logging.getLogger("restyle_rt")

DEFAULT_ITERS = 5  # the first frame's steps (the official default)
DEFAULT_ITERS_NEXT = 2  # later frames' steps, warm-started (benchmarks/video.md)
DEFAULT_ALIGN_SMOOTH = 0.5  # weight of a frame's own landmarks in the moving average (1: no smoothing)


@dataclass
class FrameResult:
    """One output frame.

    Attributes:
        index: the input frame's index (0-based, in decode order).
        latent: [S, 512] float32, the latent written (smoothed when smoothing is on; before any edit).
        frame: [h, w', 3] uint8, what goes into the video (the edit, or the inversion; side by side on request).
        steps: loop steps this frame ran.
        cold: True when it started from the seeds.
    """

    index: int
    latent: np.ndarray
    frame: np.ndarray
    steps: int
    cold: bool


class WarmStart:
    """Per-frame inversion with a warm start: the first call (and the first after :meth:`reset`) runs
    ``n_first`` steps from the seeds, later calls ``n_next`` steps from the previous call's final (latent,
    feedback). ``n_next=None``: every frame cold.

    Args:
        backend: a runtime backend (its ``encode``/``synthesize`` run the steps).
        profile: the artifacts' batch profile (one frame is padded up to its minimum).
        n_first: steps from the seeds.
        n_next: steps from the previous frame, or None.
        early_exit: per-frame early-exit threshold (see :mod:`restyle_rt.runtime.loop`).
    """

    def __init__(
        self,
        backend,
        profile,
        n_first: int = DEFAULT_ITERS,
        n_next: int | None = DEFAULT_ITERS_NEXT,
        early_exit: float | None = None,
    ):
        check_iters(n_first, early_exit)
        if n_next is not None:
            check_iters(n_next, None)
        self.backend, self.profile = backend, profile
        self.n_first, self.n_next, self.early_exit = n_first, n_next, early_exit
        self.state: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        """The next frame starts cold (after a skipped frame, a cut, or a new clip)."""
        self.state = None

    def __call__(self, x: np.ndarray, return_steps: bool = False):
        """Invert one preprocessed frame [1, 3, H, W]; returns the LoopResult (row 0 is the frame's) and whether it
        started cold."""
        cold = self.state is None or self.n_next is None
        xb = pad_to(x, self.profile.min)
        n = self.n_first if cold else self.n_next
        res = host_loop(
            self.backend,
            xb,
            n,
            return_steps=return_steps,
            early_exit=self.early_exit,
            start=None if cold else self.state,
        )
        self.state = (res.latents[:1], res.feedback[:1])  # fresh arrays each call; host_loop copies its start
        return res, cold


class LatentWindow:
    """Centred smoothing of a latent sequence: triangular weights ``r + 1 - |k|`` over frames t-r .. t+r,
    renormalised where the window is cut (clip ends, a skipped frame). Radius 0 passes latents through.

    :meth:`push` returns the items that became ready (frame t once t + r is in), :meth:`flush` the rest.
    Items are ``(latent, payload)``; ready ones are ``(smoothed latent, payload)``.
    """

    def __init__(self, radius: int = 0):
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise InputError(f"the smoothing radius must be an integer >= 0, got {radius!r}")
        self.r = int(radius)
        self.buf: deque = deque()  # the last <= 2r + 1 items
        self.next = 0  # index into buf of the next item to emit

    def weights(self, lo: int, hi: int, centre: int) -> np.ndarray:
        k = np.arange(lo, hi) - centre
        w = (self.r + 1 - np.abs(k)).astype(np.float64)
        return w / w.sum()

    def _emit(self, i: int):
        lo, hi = max(0, i - self.r), min(len(self.buf), i + self.r + 1)
        lat = np.stack([self.buf[j][0] for j in range(lo, hi)]).astype(np.float64)  # [n, S, 512]
        w = self.weights(lo, hi, i)
        smoothed = np.tensordot(w, lat, axes=1).astype(np.float32)  # [S, 512]
        return smoothed, self.buf[i][1]

    def push(self, latent: np.ndarray, payload) -> list:
        if self.r == 0:
            return [(latent, payload)]
        self.buf.append((latent, payload))
        out = []
        while len(self.buf) - 1 - self.next >= self.r:  # the next item has its r future neighbours
            out.append(self._emit(self.next))
            self.next += 1
        while self.next > self.r:  # keep r past items
            self.buf.popleft()
            self.next -= 1
        return out

    def flush(self) -> list:
        out = [self._emit(i) for i in range(self.next, len(self.buf))]
        self.buf.clear()
        self.next = 0
        return out


class SmoothedAligner:
    """FFHQ alignment of video frames with the landmarks averaged over time, so the crop does not jitter.

    ``lm_s = a * lm_t + (1 - a) * lm_s(t-1)`` (``a = smooth``; 1 turns it off); the average restarts after a
    frame without a face. Returns the aligned [size, size, 3] uint8 frame, or None when no face is found.

    Args:
        landmarks: ``frame -> [68, 2] or None``; default dlib's (the ``[align]`` extra).
        output_size: aligned crop size (the official 256).
        smooth: weight of the current frame's landmarks, in (0, 1].
    """

    def __init__(self, landmarks: Callable | None = None, output_size: int = 256, smooth: float = DEFAULT_ALIGN_SMOOTH):
        if not (isinstance(smooth, (int, float)) and 0 < smooth <= 1):
            raise InputError(f"the landmark smoothing weight must be in (0, 1], got {smooth!r}")
        if landmarks is None:
            from ..align.landmarks import DlibLandmarks

            landmarks = DlibLandmarks()
        self.landmarks, self.size, self.smooth = landmarks, int(output_size), float(smooth)
        self.prev: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        from ..align.ffhq import align

        lm = self.landmarks(frame)
        if lm is None:
            self.prev = None
            return None
        lm = np.asarray(lm, np.float64)
        self.prev = lm if self.prev is None else self.smooth * lm + (1 - self.smooth) * self.prev
        return align(frame, self.prev, self.size, self.size)


@dataclass
class VideoSettings:
    """How ``restyle-rt video`` runs (see the module docstring).

    Attributes:
        iters: steps of a cold frame (the first, and every frame with ``cold``).
        iters_next: steps of a warm-started frame.
        cold: every frame from the seeds (the official per-frame inversion).
        early_exit: per-frame early-exit threshold, or None.
        smooth: radius of the latent window (0: off).
        edit: [S, 512] latent offset ``sum_i f_i d_i``, or None.
        side_by_side: write ``[input, inversion(, edit)]`` side by side.
        aligner: ``frame -> aligned frame or None`` (e.g. :class:`SmoothedAligner`), or None.
    """

    iters: int = DEFAULT_ITERS
    iters_next: int = DEFAULT_ITERS_NEXT
    cold: bool = False
    early_exit: float | None = None
    smooth: int = 0
    edit: np.ndarray | None = None
    side_by_side: bool = False
    aligner: Callable | None = None


@dataclass
class VideoReport:
    """What :func:`invert_video` did."""

    frames_in: int = 0
    frames_out: int = 0
    skipped: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    cold: int = 0
    seconds: float = 0.0
    fps: float = 0.0


def invert_frames(
    inv, frames: Iterable[np.ndarray], settings: VideoSettings, report: VideoReport | None = None
) -> Iterator[FrameResult]:
    """Invert a stream of [h, w, 3] uint8 RGB frames with the :class:`~restyle_rt.Inverter` ``inv``; yields one
    :class:`FrameResult` per frame written (frames without a face under ``settings.aligner``, or whose inversion is
    not finite, are skipped and listed in ``report.skipped`` with ``report.reasons``).

    Lazy: each frame is read, inverted and yielded before the next is read (``settings.smooth`` frames later with
    smoothing on).
    """
    s, spec = settings, inv.spec
    report = report if report is not None else VideoReport()
    warm = WarmStart(inv.backend, inv.profile, s.iters, None if s.cold else s.iters_next, s.early_exit)
    window = LatentWindow(s.smooth)
    edit = None if s.edit is None else np.asarray(s.edit, np.float32).reshape(spec.n_styles, 512)

    def render(ready):
        return _render(inv, ready, edit, s.side_by_side, s.smooth > 0)

    for i, frame in enumerate(frames):
        report.frames_in += 1
        shown = frame if s.aligner is None else s.aligner(frame)
        res = cold = None
        if shown is not None:
            res, cold = warm(io.preprocess(shown, spec.input_hw)[None])  # [1, 3, H, W] in
        if res is None or not np.isfinite(res.latents[0]).all():  # skipped: the window ends, the next is cold
            report.skipped.append(i)
            report.reasons[i] = "no face found" if res is None else "the inversion is not finite (NaN/Inf)"
            log.warning("frame %d: %s; skipped", i, report.reasons[i])
            warm.reset()
            yield from render(window.flush())
            continue
        item = (i, shown, res.images[0], int(res.steps_used[0]), cold)
        yield from render(window.push(res.latents[0], item))
    yield from render(window.flush())


def _render(inv, ready, edit, side_by_side: bool, smoothed: bool) -> Iterator[FrameResult]:
    """Decode what the frame shows: the smoothed latent's image (when smoothing), the edit, side by side."""
    for w, (i, shown, image, steps, cold) in ready:
        lats = ([w] if smoothed else []) + ([w + edit] if edit is not None else [])
        imgs = inv.synthesize(np.stack(lats)) if lats else []  # [k, 3, h, w]
        recon = io.to_uint8(imgs[0] if smoothed else image)  # [h, w, 3]
        main = io.to_uint8(imgs[-1]) if edit is not None else recon
        if side_by_side:
            panels = [io.resize_for_display(shown, recon.shape[:2]), recon] + ([main] if edit is not None else [])
            main = np.concatenate(panels, axis=1)
        yield FrameResult(index=i, latent=w, frame=main, steps=steps, cold=cold)


def invert_video(
    inv,
    source: os.PathLike,
    out: os.PathLike,
    settings: VideoSettings,
    latents: os.PathLike | None = None,
    fps: float | None = None,
    progress: bool = True,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> VideoReport:
    """Invert (and edit) the clip ``source`` into the video ``out`` (.mp4 H.264 or .avi MJPEG) and, when asked,
    its latents (``latents`` .npy [N, S, 512] float32, one row per written frame, and a .json beside it with the
    input frame indices, steps per frame, skipped frames and settings).

    Args:
        inv: a loaded :class:`~restyle_rt.Inverter`.
        source: the input clip (anything FFmpeg decodes).
        out: the output video.
        settings: see :class:`VideoSettings`.
        latents: where to write the latents, or None.
        fps: output frame rate (default: the input's).
        progress: draw a progress bar (on a terminal).
        on_frame: called with each :class:`FrameResult` before it is encoded (e.g. to watch a long clip).

    Returns:
        VideoReport.

    Raises:
        InputError: an unreadable, truncated or size-changing clip, no frame written (e.g. no face in any frame
            with alignment), or bad settings. Nothing is left written.
    """
    from .. import progress as _progress
    from .animation import write_video
    from .videoio import NpyRows, VideoSource

    report = VideoReport()
    t0 = time.perf_counter()
    with VideoSource(source) as src, contextlib.ExitStack() as stack:
        report.fps = float(fps or src.fps)
        rows = None
        if latents is not None:
            rows = NpyRows(stack.enter_context(fsio.atomic_path(latents, durable=True)), (inv.spec.n_styles, 512))
            stack.callback(rows.abort)
        bar = stack.enter_context(
            _progress.bar(src, total=src.declared or None, unit="frame", desc="video", show=progress)
        )

        def frames() -> Iterator[np.ndarray]:
            for r in invert_frames(inv, bar, settings, report):
                if rows is not None:
                    rows.write(r.latent)
                report.indices.append(r.index)
                report.steps.append(r.steps)
                report.cold += r.cold
                if on_frame is not None:
                    on_frame(r)
                yield r.frame
            if not report.indices:
                why = (
                    f": {', '.join(sorted(set(report.reasons.values())))} in all {report.frames_in} frames"
                    if report.skipped
                    else ""
                )
                raise InputError(f"{src.path}: no frame to write{why}")

        write_video(out, frames(), report.fps)
        report.frames_out = len(report.indices)
        if rows is not None:
            rows.finish()
    if latents is not None:  # after the latents are in place
        fsio.write_text(Path(latents).with_suffix(".json"), json.dumps(_index(src.path, report, settings), indent=1))
    report.seconds = time.perf_counter() - t0
    return report


def _index(source: Path, report: VideoReport, s: VideoSettings) -> dict:
    """The latents' sidecar: which input frame each row is, its steps, the skipped frames and the settings."""
    return {
        "source": str(source),
        "fps": report.fps,
        "frames": report.indices,
        "steps_used": report.steps,
        "skipped": report.skipped,
        "settings": {
            "iters": s.iters,
            "iters_next": None if s.cold else s.iters_next,
            "cold": s.cold,
            "early_exit": s.early_exit,
            "smooth": s.smooth,
            "edited": s.edit is not None,
            "aligned": s.aligner is not None,
        },
    }
