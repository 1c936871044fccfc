"""Latent interpolation animations (the official ``animations_playground.ipynb``).

The notebook inverts K images, appends the first again (so the video loops), and for each consecutive pair (a, b)
decodes ``w = alpha * w_b + (1 - alpha) * w_a`` for alpha in ``[0]*5 + linspace(0, 1, n_transition) + [1]*5``
(``n_transition = 25``) at 15 fps. Beside each frame it shows a top-down wipe from input a to input b (row
``int((size - 1) * alpha)``). Frames are written as a video (OpenCV: ``.mp4``/``.avi``) or a GIF (Pillow).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .. import fsio
from ..errors import InputError
from ..runtime import io
from .common import synthesize_all

HOLD = 5  # frames held at each end of a transition (the notebook's [0]*5 ... [1]*5)


def alpha_schedule(n_transition: int = 25, hold: int = HOLD) -> np.ndarray:
    """The notebook's per-transition alphas: ``hold`` zeros, ``linspace(0, 1, n_transition)``, ``hold`` ones."""
    if n_transition < 2 or hold < 0:
        raise InputError(f"an animation needs >= 2 frames per transition and hold >= 0, got {n_transition}, {hold}")
    return np.concatenate([np.zeros(hold), np.linspace(0.0, 1.0, n_transition), np.ones(hold)])


def interpolate(latents: np.ndarray, n_transition: int = 25, loop: bool = True, hold: int = HOLD):
    """Frame latents for consecutive pairs of ``latents`` [K, S, 512].

    Returns:
        (frames [F, S, 512] float32, pairs [F] index of the transition's first latent, alphas [F]).
    """
    lat = np.asarray(latents, np.float32)
    if lat.ndim != 3 or lat.shape[0] < 2:
        raise InputError(f"an animation needs latents [K, S, 512] of K >= 2 images, got {list(lat.shape)}")
    seq = np.concatenate([lat, lat[:1]]) if loop else lat  # the notebook appends the first again
    alphas = alpha_schedule(n_transition, hold).astype(np.float32)  # [A]
    a, b = seq[:-1], seq[1:]  # [K', S, 512] each
    frames = b[:, None] * alphas[None, :, None, None] + a[:, None] * (1 - alphas[None, :, None, None])
    pairs = np.repeat(np.arange(a.shape[0]), alphas.size)
    return frames.reshape(-1, *lat.shape[1:]), pairs, np.tile(alphas, a.shape[0])


def wipe(image_a: np.ndarray, image_b: np.ndarray, alpha: float) -> np.ndarray:
    """The notebook's top-down wipe: rows of ``image_b`` slide in from the top as alpha goes 0 -> 1 ([h, w, 3])."""
    size = image_a.shape[0]
    row = int((size - 1) * alpha)
    out = np.zeros_like(image_a)
    if row > 0:
        out[: row + 1] = image_b[size - 1 - row:]
    if row < size - 1:
        out[row:] = image_a[: size - row]
    return out


def render(backend, profile, latents: np.ndarray, n_transition: int = 25, loop: bool = True,
           inputs: Optional[Sequence[np.ndarray]] = None, progress=None) -> List[np.ndarray]:
    """Decode the interpolation into uint8 frames [h, w(, x2), 3] (with the input wipe beside when given)."""
    frames, pairs, alphas = interpolate(latents, n_transition, loop)
    imgs = synthesize_all(backend, profile, frames, progress)  # [F, 3, h, w]
    out = []
    k = np.asarray(latents).shape[0]
    for img, p, a in zip(imgs, pairs, alphas):
        frame = io.to_uint8(img)  # [h, w, 3]
        if inputs is not None:
            ia = io.resize_for_display(inputs[p], frame.shape[:2])
            ib = io.resize_for_display(inputs[(p + 1) % k], frame.shape[:2])
            frame = np.concatenate([wipe(ia, ib, float(a)), frame], axis=1)
        out.append(frame)
    return out


def write_video(path: os.PathLike, frames: Sequence[np.ndarray], fps: float = 15.0) -> Path:
    """Write RGB uint8 frames to ``.mp4``/``.avi`` (OpenCV) or ``.gif`` (Pillow); atomic (temp name + rename).

    Raises:
        InputError: no frames, an unknown extension, a writer that cannot be opened, or Pillow missing for GIF.
    """
    p = Path(os.fsdecode(path))
    if not frames:
        raise InputError("no frames to write")
    ext = p.suffix.lower()
    if ext not in (".mp4", ".avi", ".gif"):
        raise InputError(f"{p}: unknown video type {ext!r}; use .mp4, .avi or .gif")
    with fsio.atomic_path(p) as tmp:
        work = tmp.with_name(tmp.name + ext)  # the writers pick the container from the extension
        try:
            (_write_gif if ext == ".gif" else _write_cv2)(work, frames, fps)
            os.replace(work, tmp)
        finally:
            if work.exists():
                work.unlink()
    return p


def _write_cv2(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (w, h))
    if not writer.isOpened():
        raise InputError(f"OpenCV cannot open a video writer for {path} ({w}x{h} at {fps} fps); "
                         "try .avi, or .gif with Pillow installed")
    try:
        for f in frames:
            writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    finally:
        writer.release()
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(f"OpenCV wrote nothing to {path}")


def _write_gif(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    try:
        from PIL import Image
    except ImportError:
        raise InputError("writing a GIF needs Pillow (`pip install pillow`); or write .mp4 / .avi") from None
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000 / fps)), loop=0)
