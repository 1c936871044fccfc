"""Test clips with known latents: a smooth path through W drawn by a fitted fixture's own generator.

Key latents come from :func:`restyle_rt.export.fit.sample_targets` (the fit's distribution: ``latent_avg + U a``
in its principal subspace); the path between them is a uniform Catmull-Rom spline (weights sum to one, so every
frame's latent stays in that subspace, where the fitted encoder inverts). Frames are drawn by the exported synthesis
graph (ONNX Runtime, the generator the runtime inverts against) and written with ``animation.write_video``.
"""

from __future__ import annotations

import os

import numpy as np


def catmull_rom(keys: np.ndarray, n_frames: int) -> np.ndarray:
    """[K, ...] key points -> [n_frames, ...] points on the uniform Catmull-Rom spline through them (ends
    clamped), evenly spaced in the spline parameter."""
    k = keys.shape[0]
    pts = np.concatenate([keys[:1], keys, keys[-1:]]).astype(np.float64)  # [K + 2, ...]
    u = np.linspace(0.0, k - 1, n_frames)
    seg = np.minimum(u.astype(int), k - 2)
    t = (u - seg).reshape(-1, *([1] * (keys.ndim - 1)))
    p0, p1, p2, p3 = pts[seg], pts[seg + 1], pts[seg + 2], pts[seg + 3]
    out = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
    return out.astype(np.float32)


def path_latents(ckpt: os.PathLike, n_frames: int, n_keys: int, seed: int = 7) -> np.ndarray:
    """True latents [n_frames, S, 512] along a smooth path through ``n_keys`` latents of the fit's distribution."""
    from restyle_rt.export.fit import sample_targets

    keys, _ = sample_targets(ckpt, n_keys, seed=seed)  # [K, S, 512]
    return catmull_rom(keys, n_frames)


def render(backend, profile, latents: np.ndarray) -> np.ndarray:
    """[N, h, w, 3] uint8 frames the generator draws from ``latents`` (``tensor2im``)."""
    from restyle_rt.runtime import io
    from restyle_rt.runtime.loop import synthesize_all

    return np.stack([io.to_uint8(i) for i in synthesize_all(backend, profile, latents)])


def make_clip(
    artifacts_dir: os.PathLike,
    ckpt: os.PathLike,
    path: os.PathLike,
    n_frames: int = 24,
    n_keys: int = 3,
    fps: float = 24.0,
    seed: int = 7,
) -> tuple[np.ndarray, np.ndarray]:
    """Write the clip to ``path`` (.mp4 H.264 / .avi MJPEG); returns (true latents [N, S, 512], frames as drawn
    [N, h, w, 3] uint8, before the codec)."""
    from restyle_rt import artifacts
    from restyle_rt.runtime.backends.ort import OrtBackend
    from restyle_rt.workflows.animation import write_video

    lat = path_latents(ckpt, n_frames, n_keys, seed)
    art = artifacts.load(artifacts_dir)
    with OrtBackend(art) as be:
        frames = render(be, art.profile, lat)
    write_video(path, list(frames), fps)
    return lat, frames
