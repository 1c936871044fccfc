"""Latent interpolation animations (the official ``animations_playground.ipynb``).

The notebook inverts K images, appends the first again (so the video loops), and for each consecutive pair (a, b)
decodes ``w = alpha * w_b + (1 - alpha) * w_a`` for alpha in ``[0]*5 + linspace(0, 1, n_transition) + [1]*5``
(``n_transition = 25``) at 15 fps. Beside each frame it shows a top-down wipe from input a to input b (row
``int((size - 1) * alpha)``). Frames are written as a video through PyAV (``pip install 'restyle-rt[video]'``:
``.mp4`` is H.264 in yuv420p, which browsers play; ``.avi`` is Motion JPEG) or as a GIF (Pillow, no extra).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import InputError
from ..runtime import io

HOLD = 5  # frames held at each end of a transition (the notebook's [0]*5 ... [1]*5)
# extension -> (PyAV codec, pixel format, codec options). H.264 at CRF 18: visually lossless, the frames are smooth.
VIDEO_CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    ".mp4": ("libx264", "yuv420p", {"crf": "18", "preset": "medium"}),
    ".avi": ("mjpeg", "yuvj420p", {"q:v": "3"}),
}
VIDEO_EXTRA = "pip install 'restyle-rt[video]'"


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
        out[: row + 1] = image_b[size - 1 - row :]
    if row < size - 1:
        out[row:] = image_a[: size - row]
    return out


def render(
    inv,
    latents: np.ndarray,
    n_transition: int = 25,
    loop: bool = True,
    inputs: Sequence[np.ndarray] | None = None,
    progress=None,
) -> list[np.ndarray]:
    """Decode the interpolation into uint8 frames [h, w(, x2), 3] (with the input wipe beside when given), through
    the :class:`~restyle_rt.Inverter` ``inv`` (:meth:`~restyle_rt.Inverter.synthesize`)."""
    frames, pairs, alphas = interpolate(latents, n_transition, loop)
    imgs = inv.synthesize(frames, progress)  # [F, 3, h, w]
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


def write_video(path: os.PathLike, frames: Iterable[np.ndarray], fps: float = 15.0) -> Path:
    """Write RGB uint8 frames to ``.mp4`` (H.264) / ``.avi`` (MJPEG) with PyAV, or ``.gif`` with Pillow; atomic
    (temp name + rename).

    ``frames`` may be a generator: PyAV encodes each frame as it comes (a video never holds the clip; a GIF does).
    An exception raised by the generator leaves no file behind.

    Raises:
        InputError: no frames, frames of different sizes, an unknown extension, PyAV missing (names the
            ``[video]`` extra) or unable to encode.
    """
    p = Path(os.fsdecode(path))
    if isinstance(frames, Sequence) and not frames:
        raise InputError("no frames to write")
    ext = check_writable_type(p)
    with fsio.atomic_path(p) as tmp:
        work = tmp.with_name(tmp.name + ext)  # the writers pick the container from the extension
        try:
            (_write_gif if ext == ".gif" else _write_av)(work, frames, fps)
            os.replace(work, tmp)
        finally:
            if work.exists():
                work.unlink()
    return p


def check_writable_type(path: os.PathLike) -> str:
    """The lower-case extension of ``path`` when this install can write it (fail early, before any model loads).

    Raises:
        InputError: not .mp4/.avi/.gif, or a video type without PyAV (naming the ``[video]`` extra).
    """
    ext = Path(os.fsdecode(path)).suffix.lower()
    if ext not in (*VIDEO_CODECS, ".gif"):
        raise InputError(f"{path}: unknown video type {ext!r}; use .mp4, .avi or .gif")
    if ext in VIDEO_CODECS:
        try:
            import av  # noqa: F401
        except ImportError:
            raise InputError(f"writing {ext} needs PyAV: {VIDEO_EXTRA} (or write a .gif)") from None
    return ext


def _write_av(path: Path, frames: Iterable[np.ndarray], fps: float) -> None:
    """Encode with PyAV (FFmpeg), one frame at a time; odd frame sizes are padded by one edge row/column (4:2:0
    needs even sizes)."""
    from fractions import Fraction

    import av  # (check_writable_type has checked it imports)

    codec, pix_fmt, options = VIDEO_CODECS[path.suffix.lower()]
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise InputError("no frames to write")
    h, w = first.shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    try:
        with av.open(str(path), "w", options={"movflags": "+faststart"} if codec == "libx264" else {}) as out:
            stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
            stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, pix_fmt
            for i, f in enumerate(itertools.chain([first], it)):
                if f.shape[:2] != (h, w):
                    raise InputError(
                        f"frame {i} is {f.shape[1]}x{f.shape[0]}, the video {w}x{h}: every frame "
                        "must have the first one's size"
                    )
                img = np.ascontiguousarray(np.pad(f, pad, mode="edge") if any(pad[0] + pad[1]) else f)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(stream.encode(None))  # flush the encoder
    except (av.FFmpegError, ValueError) as e:  # (an FFmpeg build without the codec: UnknownCodecError, a ValueError)
        raise InputError(f"PyAV cannot write {path.suffix} ({codec}, {w}x{h} at {fps:g} fps): {e}") from None
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(f"PyAV wrote nothing to {path}")


def _write_gif(path: Path, frames: Iterable[np.ndarray], fps: float) -> None:
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    if not ims:
        raise InputError("no frames to write")
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000 / fps)), loop=0)
