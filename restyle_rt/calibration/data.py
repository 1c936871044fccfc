"""Calibration and held-out images: a folder of the user's images, or images the checkpoint's generator draws.

Two sources of generated images, both decoded by the exported ``synthesis.onnx`` (the encoder input is its
``feedback`` output, the exact box-average of the image to the encoder resolution, clipped to [-1, 1]):

* ``mapping`` (needs the official checkpoint: the exported graphs carry only the synthesis network, the mapping
  network lives in the checkpoint's ``decoder.style.*``): ``w = mapping(z)``, ``z ~ N(0, I)``, truncated toward
  ``latent_avg`` by ``psi`` (1 = none), the same ``w`` on every style (an in-distribution StyleGAN sample).
* ``latent-avg`` (artifacts only): ``w = latent_avg + sigma * n``, ``n ~ N(0, I)`` per style and channel. A
  stand-in when the checkpoint is not at hand: it is *not* the generator's distribution (the scale of W around
  its mean is unknown without the mapping network), so prefer ``mapping`` or real images.

Held-out images are drawn from a disjoint part of the folder (its last ``held_out`` files in sorted order) or from
a different seed stream, so accuracy is never measured on the calibration images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..artifacts import Artifacts
from ..errors import InputError
from ..runtime import io

log = logging.getLogger("restyle_rt")

HELD_OUT_SEED_OFFSET = 1_000_003  # generated held-out images use seed + this: a stream disjoint from calibration


@dataclass
class ImageSet:
    """Preprocessed encoder inputs and where they came from.

    Attributes:
        calib: [N, 3, H, W] float32 calibration images in [-1, 1].
        held_out: [M, 3, H, W] float32 images for accuracy measurement, never among ``calib``.
        source: a short description recorded in the manifest (``images:DIR`` or ``generated:<how>``).
    """

    calib: np.ndarray
    held_out: np.ndarray
    source: str


def from_folder(art: Artifacts, folder: str, count: int | None, held_out: int) -> ImageSet:
    """Read a folder of images: the last ``held_out`` (sorted) are held out, up to ``count`` of the rest calibrate.

    Raises:
        InputError: too few readable images, or an unreadable file (named).
    """
    paths = io.list_images([folder])
    if held_out < 1 or len(paths) < held_out + 1:
        raise InputError(
            f"--images {folder}: found {len(paths)} image(s), need at least {held_out + 1} "
            f"({held_out} held out for accuracy + 1 to calibrate); add images or lower --held-out"
        )
    hold, cal = paths[len(paths) - held_out :], paths[: len(paths) - held_out]
    if count is not None:
        cal = cal[:count]
    hw = art.spec.input_hw
    read = lambda ps: np.stack([io.preprocess_file(p, hw) for p in ps]).astype(np.float32)  # noqa: E731
    return ImageSet(read(cal), read(hold), f"images:{folder}")


def latents_around_avg(art: Artifacts, n: int, sigma: float, seed: int) -> np.ndarray:
    """[n, S, 512] float32: ``latent_avg + sigma * N(0, I)``."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, art.spec.n_styles, 512)).astype(np.float32)
    return (art.latent_avg[None] + np.float32(sigma) * noise).astype(np.float32)


def latents_from_mapping(checkpoint: str, art: Artifacts, n: int, psi: float, seed: int) -> np.ndarray:
    """[n, S, 512] float32 StyleGAN samples through the checkpoint's mapping network (imports torch)."""
    import torch

    from ..export.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    if ck.spec.n_styles != art.spec.n_styles or ck.spec.output_size != art.spec.output_size:
        raise InputError(
            f"--checkpoint {checkpoint} is a {ck.spec.output_size}px, {ck.spec.n_styles}-style model; "
            f"the artifacts are {art.spec.output_size}px, {art.spec.n_styles} styles: pass the "
            "checkpoint they were exported from"
        )
    from ..export.nets.synthesis import Generator

    gen = Generator(ck.spec.output_size)  # the mapping network lives in the generator; no need for the encoder
    gen.load_state_dict(ck.decoder_sd, strict=True)
    gen.eval()
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32))
    avg = torch.from_numpy(art.latent_avg)  # [S, 512]
    with torch.no_grad():
        w = gen.mapping(z)  # [n, 512]
        w = avg[None] + psi * (w[:, None, :] - avg[None])  # [n, S, 512]
    return w.numpy().astype(np.float32)


def render(art: Artifacts, latents: np.ndarray, batch: int = 4) -> np.ndarray:
    """Encoder inputs [n, 3, H, W] from latents through ``synthesis.onnx`` (its feedback output, clipped)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(art.graph_path("synthesis")), so, providers=["CPUExecutionProvider"])
    out = [sess.run(["feedback"], {"latent": latents[i : i + batch]})[0] for i in range(0, len(latents), batch)]
    return np.clip(np.concatenate(out), -1.0, 1.0).astype(np.float32)


def generated(
    art: Artifacts,
    n: int,
    held_out: int,
    seed: int = 0,
    checkpoint: str | None = None,
    psi: float = 0.7,
    sigma: float = 0.5,
) -> ImageSet:
    """``n`` calibration and ``held_out`` held-out images drawn by the generator (see the module docstring)."""
    if n < 1 or held_out < 1:
        raise InputError(f"need >= 1 calibration and >= 1 held-out image, got {n} and {held_out}")

    def draw(count: int, s: int) -> tuple[np.ndarray, str]:
        if checkpoint:
            return latents_from_mapping(checkpoint, art, count, psi, s), f"generated:mapping(psi={psi})"
        return latents_around_avg(art, count, sigma, s), f"generated:latent_avg+{sigma}*N(0,I)"

    if not checkpoint:
        log.warning(
            "--generated without --checkpoint: latents latent_avg + %g*N(0, I), not the generator's own "
            "distribution; pass the checkpoint the artifacts came from to sample its mapping network",
            sigma,
        )
    w_cal, how = draw(n, seed)
    w_hold, _ = draw(held_out, seed + HELD_OUT_SEED_OFFSET)
    log.info("calibration data: %d + %d held-out images from %s", n, held_out, how)
    return ImageSet(render(art, w_cal), render(art, w_hold), how)
