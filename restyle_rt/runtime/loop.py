"""The ReStyle residual loop on the host, the same for every backend. Never imports torch.

With w_0 = ``latent_avg`` and y_0 = ``avg_feedback`` (both broadcast over the batch), for t = 1..N::

    w_t = Enc(x, y_{t-1}, w_{t-1})        # the graph adds the residual: latent_next = latent + E(x, y)
    (img_t, y_t) = Syn(w_t)

Latents stay float32 throughout (they accumulate). Buffers are allocated once per call and reused every step.

Adaptive early exit (not in the official code): with ``early_exit=tau``, after step t an image whose latent
update ``delta_t = sqrt(mean((w_t - w_{t-1})**2))`` (RMS over its S x 512 entries) is below ``tau`` stops: its
latent and image stay those of step t, and it leaves the active set, so later steps run the backend on the
remaining images only. ``LoopResult.steps_used`` gives each image's step count; per-step outputs repeat the
frozen values.

Warm start (``start=(w, y)``, used by :mod:`restyle_rt.workflows.video`): the loop runs the same recursion from a
given state instead of the seeds, e.g. the previous video frame's final latent and feedback
(``LoopResult.feedback``). ``host_loop(x, m + n)`` and ``host_loop(x, n, start=(w_m, y_m))`` run the same steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..errors import InputError
from ..spec import BatchProfile
from .backend import Backend, LoopResult

log = logging.getLogger("restyle_rt")
T = TypeVar("T")


def check_batch(profile: BatchProfile, batch: int, who: str) -> None:
    """Raise :class:`InputError` unless ``profile.min <= batch <= profile.max``.

    Args:
        profile: the artifacts' batch profile.
        batch: the batch size asked for.
        who: what is asking (named in the message), e.g. ``"ort backend"``.
    """
    if not profile.min <= batch <= profile.max:
        raise InputError(
            f"{who}: batch {batch} is outside the artifacts' batch profile "
            f"[min {profile.min}, opt {profile.opt}, max {profile.max}]; split it (Inverter.invert does) "
            f"or rebuild with a larger profile"
        )


def check_images(images: np.ndarray, input_hw, who: str = "loop") -> np.ndarray:
    """Validate a preprocessed [B, 3, H, W] float32 batch ((H, W) == ``input_hw``); return it contiguous."""
    a = np.asarray(images)
    h, w = input_hw
    if a.ndim != 4 or a.shape[1:] != (3, h, w):
        raise InputError(f"{who}: expected images [B, 3, {h}, {w}], got {list(a.shape)}")
    if a.dtype != np.float32:
        raise InputError(f"{who}: expected float32 images in [-1, 1], got {a.dtype}")
    return np.ascontiguousarray(a)


def profile_chunks(profile: BatchProfile, n: int):
    """``(start, stop)`` slices of ``range(n)`` of at most ``profile.max`` rows (:func:`run_in_chunks` pads a short
    one up to ``profile.min`` and drops the padding rows' results)."""
    for start in range(0, n, profile.max):
        yield start, min(start + profile.max, n)


def pad_to(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with its last row repeated up to ``rows`` rows (``x`` itself when it has that many)."""
    return x if len(x) >= rows else np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def run_in_chunks(
    profile: BatchProfile, x: np.ndarray, fn: Callable[[np.ndarray], T], progress: Callable[[int], object] | None = None
) -> list[T]:
    """Run ``fn`` on ``x`` [N, ...] chunk by chunk, within the batch profile: the one batching rule of the runtime.

    Chunks are consecutive rows, in order, of ``profile.max`` rows each but the last; a chunk shorter than
    ``profile.min`` is padded up to it by repeating its last row (:func:`pad_to`), and that chunk's result is trimmed
    back to its real rows (:func:`take_rows`).

    Args:
        profile: the batch range ``fn`` accepts.
        x: the rows to split (images, latents).
        fn: called once per chunk with [b, ...], ``profile.min <= b <= profile.max``; returns a result whose arrays
            have ``b`` rows (an array, a :class:`LoopResult`, or tuples/lists of them).
        progress: called with the number of real rows done after each chunk (e.g. ``tqdm.update``).

    Returns:
        One result per chunk, each with the chunk's real rows only (:func:`concat_results` joins LoopResults).
    """
    out: list[T] = []
    for start, stop in profile_chunks(profile, len(x)):
        chunk = pad_to(x[start:stop], profile.min)
        r = fn(chunk)
        out.append(r if len(chunk) == stop - start else take_rows(r, stop - start))
        if progress is not None:
            progress(stop - start)
    return out


def take_rows(result, n: int):
    """The first ``n`` rows of a chunk's result (drops padding rows): of an array, of every per-image field of a
    :class:`LoopResult` (stage times kept), or of each element of a tuple or list of those."""
    if isinstance(result, np.ndarray):
        return result[:n]
    if isinstance(result, LoopResult):
        return LoopResult(
            latents=result.latents[:n],
            images=result.images[:n],
            steps_used=result.steps_used[:n],
            step_latents=[a[:n] for a in result.step_latents],
            step_images=[a[:n] for a in result.step_images],
            stages=result.stages,
            feedback=None if result.feedback is None else result.feedback[:n],
        )
    if type(result) in (tuple, list):
        return type(result)(take_rows(r, n) for r in result)
    raise TypeError(f"take_rows: cannot trim a {type(result).__name__}; return arrays, LoopResults or tuples/lists")


def synthesize_all(backend: Backend, profile: BatchProfile, latents: np.ndarray, progress=None) -> np.ndarray:
    """Images [N, 3, h, w] = G(latents [N, S, 512]) in profile-sized chunks (:func:`run_in_chunks`).

    Args:
        backend: a runtime backend (``synthesize`` returns views it may reuse: copied here).
        profile: the batch range it accepts (the artifacts' or an engine's).
        latents: [N, S, 512] float32.
        progress: optional callable taking the number of latents done in each chunk (e.g. ``tqdm.update``).

    Raises:
        InputError: latents not [N, S, 512] with N >= 1.
    """
    lat = np.ascontiguousarray(latents, np.float32)
    if lat.ndim != 3 or lat.shape[0] == 0:
        raise InputError(f"expected latents [N, S, 512] with N >= 1, got {list(lat.shape)}")
    return np.concatenate(run_in_chunks(profile, lat, lambda w: np.array(backend.synthesize(w)[0]), progress))


def check_feed(artifacts, graph: str, feed: dict, who: str) -> int:
    """Validate one graph call's inputs against the spec (float32, exact shapes for their batch); return the batch.

    Raises:
        InputError: a batch outside the profile, or an input of the wrong dtype or shape (named, expected vs got).
    """
    b = next(iter(feed.values())).shape[0]
    check_batch(artifacts.profile, b, f"{who} {graph}")
    ins, _ = artifacts.spec.graph_io(graph)
    for t in ins:
        a = feed[t.name]
        if a.shape != t.concrete(b) or a.dtype != np.float32:
            raise InputError(
                f"{who} {graph}: input {t.name} must be float32 {list(t.concrete(b))}, got {a.dtype} {list(a.shape)}"
            )
    return b


def check_iters(n_iters, early_exit) -> None:
    """Validate loop arguments: ``n_iters`` a positive int, ``early_exit`` None or a finite number >= 0."""
    if isinstance(n_iters, bool) or not isinstance(n_iters, (int, np.integer)) or n_iters < 1:
        raise InputError(f"n_iters must be a positive integer, got {n_iters!r}")
    if early_exit is not None and (
        isinstance(early_exit, bool)
        or not isinstance(early_exit, (int, float, np.integer, np.floating))
        or not (np.isfinite(early_exit) and early_exit >= 0)
    ):
        raise InputError(
            f"early_exit must be None or a finite threshold >= 0, got {type(early_exit).__name__} {early_exit!r}"
        )


def latent_rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image RMS of ``a - b`` over all but the batch axis: [B, S, 512] x2 -> [B] float64."""
    d = (a - b).reshape(a.shape[0], -1)  # [B, S*512]
    return np.sqrt(np.mean(np.square(d, dtype=np.float64), axis=1))


def host_loop(
    backend: Backend,
    images: np.ndarray,
    n_iters: int,
    return_steps: bool = False,
    early_exit: float | None = None,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> LoopResult:
    """Run the residual loop with host (NumPy) buffers on any backend.

    Args:
        backend: runs ``encode`` and ``synthesize``; the batch must fit its artifacts' profile.
        images: [B, 3, H, W] float32 preprocessed inputs in [-1, 1].
        n_iters: N >= 1 steps.
        return_steps: also return every step's latents and images.
        early_exit: stop an image once its latent update RMS falls below this (see module docstring).
        start: (latents [B or 1, S, 512], feedback [B or 1, 3, H, W]) float32 to start from instead of
            (``latent_avg``, ``avg_feedback``): a warm start (copied, never written).

    Returns:
        LoopResult with latents [B, S, 512], images [B, 3, h, w], feedback [B, 3, H, W] (the last step's, what a
        warm start continues from), steps_used [B] and, when asked, per-step arrays.

    Raises:
        InputError: bad shapes or arguments, or a batch outside the artifacts' profile.
    """
    art = backend.artifacts
    check_iters(n_iters, early_exit)
    x = check_images(images, art.spec.input_hw)
    b = x.shape[0]
    check_batch(art.profile, b, f"{backend.name or type(backend).__name__} backend")
    s = art.spec.n_styles
    ih, iw = art.spec.image_hw
    # Output buffers; while no image has exited they are also the working buffers.
    w0, y0 = (art.latent_avg[None], art.avg_feedback[None]) if start is None else check_start(start, art.spec, b)
    lat = np.empty((b, s, 512), np.float32)  # [B, S, 512]
    lat[:] = w0
    img = np.empty((b, 3, ih, iw), np.float32)  # [B, 3, h, w]
    fb = np.empty((b, 3) + tuple(art.spec.input_hw), np.float32)  # [B, 3, H, W]
    fb[:] = y0
    steps = np.full(b, n_iters, dtype=np.int64)
    state = _Active(x, lat, fb, img, compact=False)
    res = LoopResult(latents=lat, images=img, steps_used=steps, feedback=fb)
    res.stages = {"encoder": 0.0, "synthesis": 0.0, "copies": 0.0}
    for t in range(1, n_iters + 1):
        if state.size:
            delta = _step(backend, state, res.stages)
            done = None if early_exit is None else delta < early_exit
            if state.compact:  # scatter the active images into the outputs
                lat[state.idx] = state.lat
                img[state.idx] = state.img
                fb[state.idx] = state.fb
            if done is not None and done.any():
                steps[state.idx[done]] = t
                state = state.keep(~done)
        if return_steps:
            res.step_latents.append(lat.copy())
            res.step_images.append(img.copy())
    if early_exit is not None:
        log.debug("early exit %.3g: steps used %s", early_exit, steps.tolist())
    return res


def check_start(start, spec, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a warm-start state ``(latents, feedback)``: float32, finite, [B or 1, S, 512] and [B or 1, 3, H, W].

    Raises:
        InputError: naming the part and its expected vs actual dtype/shape, or non-finite values.
    """
    try:
        w, y = start
    except (TypeError, ValueError):
        raise InputError("start must be a (latents, feedback) pair") from None
    h, wd = spec.input_hw
    out = []
    for name, a, tail in (("latents", w, (spec.n_styles, 512)), ("feedback", y, (3, h, wd))):
        a = np.asarray(a)
        if a.dtype != np.float32 or a.ndim != 1 + len(tail) or a.shape[1:] != tail or a.shape[0] not in (1, b):
            raise InputError(
                f"start {name}: expected float32 [{b} or 1, {', '.join(map(str, tail))}], got {a.dtype} {list(a.shape)}"
            )
        if not np.isfinite(a).all():
            raise InputError(f"start {name}: non-finite values")
        out.append(a)
    return out[0], out[1]


class _Active:
    """The images still iterating: their indices into the batch and compact working buffers."""

    def __init__(self, x, lat, fb, img, compact: bool, idx: np.ndarray | None = None):
        self.x, self.lat, self.fb, self.img, self.compact = x, lat, fb, img, compact  # [A, ...] each
        self.idx = np.arange(x.shape[0]) if idx is None else idx  # [A]
        self.prev = np.empty_like(lat)  # [A, S, 512], w_{t-1} for the update size

    @property
    def size(self) -> int:
        return int(self.idx.shape[0])

    def keep(self, mask: np.ndarray) -> _Active:
        """A new, smaller active set (copies once per shrink, so finished images cost nothing afterwards)."""
        return _Active(
            np.ascontiguousarray(self.x[mask]),
            self.lat[mask],
            self.fb[mask],
            self.img[mask],
            compact=True,
            idx=self.idx[mask],
        )


def _step(backend: Backend, st: _Active, stages: dict) -> np.ndarray:
    """One encoder + synthesis step on the active set, in place; returns the latent update RMS [A]."""
    t0 = time.perf_counter()
    w_next = backend.encode(st.x, st.fb, st.lat)  # [A, S, 512]
    t1 = time.perf_counter()
    np.copyto(st.prev, st.lat)
    np.copyto(st.lat, w_next)
    t2 = time.perf_counter()
    image, feedback = backend.synthesize(st.lat)  # [A, 3, h, w], [A, 3, H, W]
    t3 = time.perf_counter()
    np.copyto(st.img, image)
    np.copyto(st.fb, feedback)
    delta = latent_rms(st.lat, st.prev)  # [A]
    t4 = time.perf_counter()
    stages["encoder"] += t1 - t0
    stages["synthesis"] += t3 - t2
    stages["copies"] += (t2 - t1) + (t4 - t3)
    return delta


def concat_results(parts: list[LoopResult]) -> LoopResult:
    """Join the LoopResults of consecutive batch chunks along the batch axis (stage times are summed)."""
    if len(parts) == 1:
        return parts[0]
    out = LoopResult(
        latents=np.concatenate([p.latents for p in parts]),  # [B, S, 512]
        images=np.concatenate([p.images for p in parts]),  # [B, 3, h, w]
        steps_used=np.concatenate([p.steps_used for p in parts]),  # [B]
    )
    n_steps = len(parts[0].step_latents)
    out.step_latents = [np.concatenate([p.step_latents[t] for p in parts]) for t in range(n_steps)]
    out.step_images = [np.concatenate([p.step_images[t] for p in parts]) for t in range(n_steps)]
    for p in parts:
        for k, v in p.stages.items():
            out.stages[k] = out.stages.get(k, 0.0) + v
    return out
