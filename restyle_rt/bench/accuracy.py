"""Accuracy beside speed: each benchmarked target's loop, step by step, against the FP32 reference loop.

The reference is the official-formulation FP32 torch loop (:func:`restyle_rt.export.reference.reference_loop`)
when the source checkpoint is known and torch is installed, else the ``ort`` backend in FP32. For every
(target, precision, batch) one extra, untimed loop of ``max(iters)`` steps runs on the same inputs as the timed
ones, and each step's latent and image are compared with the reference's (:func:`restyle_rt.parity.compare`):
latent rel-L2, image rel-L2 and image PSNR (peak-to-peak 2), one value per step.

On a *fitted* checkpoint (:mod:`restyle_rt.export.fit`, its loop converges) the inputs are images its generator
draws from known latents (:func:`fitted_targets`), and each step also records what the user gets: PSNR against the
target image and latent RMS to the true latent, for the target and for the reference, and their difference. The
ship bar (:func:`restyle_rt.parity.meets_ship_bar`) is judged on the last step: at most 0.2 dB of PSNR
against the target lost relative to FP32, and at least 35 dB against the FP32 loop's image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..manifest import Source
from ..parity import compare, meets_ship_bar

log = logging.getLogger("restyle_rt")

TARGET_SEED = 1_000_003  # held out: the fit draws with seeds 0 (PCA) and 1 (training)


@dataclass
class Truth:
    """Inputs with known answers: targets [B, 3, h, w] in [-1, 1] (the uint8 images the generator drew) and
    their true latents [B, S, 512]."""

    targets: np.ndarray
    latents: np.ndarray

    def take(self, n: int) -> Truth:
        return Truth(self.targets[:n], self.latents[:n])


@dataclass
class Steps:
    """Per-step loop outputs: latents [B, S, 512] and images [B, 3, h, w], one array per step."""

    label: str
    latents: list[np.ndarray]
    images: list[np.ndarray]


def reference_steps(
    art, checkpoint: str | None, xs: dict[int, np.ndarray], n_iters: int, threads: int
) -> dict[int, Steps]:
    """The FP32 reference loop for each batch in ``xs`` (batch -> [B, 3, H, W] inputs), ``n_iters`` steps."""
    if checkpoint is not None and _torch_importable():
        return _torch_reference(checkpoint, xs, n_iters, threads)
    from ..runtime.backends import get_backend

    log.info("bench accuracy: reference is the ort backend in FP32 (no checkpoint or no torch)")
    out = {}
    with get_backend("ort", art, threads=threads) as be:
        for b, x in xs.items():
            res = be.run_loop(x, n_iters, return_steps=True)
            out[b] = Steps("ort fp32", res.step_latents, res.step_images)
    return out


def _torch_reference(checkpoint: str, xs: dict[int, np.ndarray], n_iters: int, threads: int) -> dict[int, Steps]:
    import torch

    from ..export.checkpoint import load_checkpoint
    from ..export.reference import TorchModels, reference_loop

    torch.set_num_threads(threads)
    models = TorchModels.from_checkpoint(load_checkpoint(checkpoint))
    out = {}
    with torch.no_grad():
        for b, x in xs.items():
            steps = reference_loop(models, torch.from_numpy(x), n_iters, official=True)
            out[b] = Steps(
                "torch-official fp32", [s.latent.numpy().copy() for s in steps], [s.image.numpy().copy() for s in steps]
            )
    return out


def agreement(ref: Steps, got: Steps, n_iters: int, truth: Truth | None = None) -> dict:
    """Per-step agreement of ``got`` with ``ref`` over the first ``n_iters`` steps (JSON-ready); with ``truth``,
    also each loop's PSNR against the targets and latent RMS to the truth, and the ship-bar verdict."""
    lat = [compare(got.latents[t], ref.latents[t]) for t in range(n_iters)]
    img = [compare(got.images[t], ref.images[t]) for t in range(n_iters)]
    out = {
        "reference": ref.label,
        "latent_rel_l2": [r.rel_l2 for r in lat],
        "image_rel_l2": [r.rel_l2 for r in img],
        "image_psnr_db": [r.psnr_db if np.isfinite(r.psnr_db) else None for r in img],  # None: identical
    }
    if truth is not None:
        mine = [target_psnr_db(got.images[t], truth.targets) for t in range(n_iters)]
        theirs = [target_psnr_db(ref.images[t], truth.targets) for t in range(n_iters)]
        out.update(
            {
                "target_psnr_db": mine,
                "reference_target_psnr_db": theirs,
                "target_psnr_change_db": [a - b for a, b in zip(mine, theirs)],
                "truth_latent_rms": [truth_rms(got.latents[t], truth.latents) for t in range(n_iters)],
                "reference_truth_latent_rms": [truth_rms(ref.latents[t], truth.latents) for t in range(n_iters)],
            }
        )
        out["meets_bar"] = meets_bar(out)
    return out


def meets_bar(acc: dict) -> bool | None:
    """The ship bar on the last step: None without target figures (random weights: no answer to lose)."""
    if not acc or "target_psnr_change_db" not in acc:
        return None
    return meets_ship_bar(acc["target_psnr_change_db"][-1], acc["image_psnr_db"][-1])


def target_psnr_db(images: np.ndarray, targets: np.ndarray) -> float:
    """Mean over images of the PSNR (peak-to-peak 2) of clip(image) against its target, both [B, 3, h, w]."""
    d = np.clip(images.astype(np.float64), -1, 1) - targets.astype(np.float64)
    mse = np.mean(np.square(d).reshape(len(d), -1), axis=1)
    return float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-20))))


def truth_rms(latents: np.ndarray, truth: np.ndarray) -> float:
    """RMS of ``latents - truth`` over every image, style and channel."""
    return float(np.sqrt(np.mean(np.square(latents.astype(np.float64) - truth))))


def is_fitted(art) -> bool:
    """Whether the artifacts were exported from a fitted checkpoint (the manifest's ``source.fit``)."""
    source = art.manifest.source
    return isinstance(source, Source) and bool(source.fit)


def fitted_targets(checkpoint: str, n: int, hw, seed: int = TARGET_SEED):
    """``n`` held-out targets of a fitted checkpoint: (encoder inputs [n, 3, H, W] as the runtime preprocesses
    them, :class:`Truth`). Needs torch (the generator draws them)."""
    from ..export.fit import sample_targets
    from ..runtime import io

    w, img = sample_targets(checkpoint, n, seed)  # [n, S, 512], [n, h, w, 3] uint8
    x = np.stack([io.preprocess(i, hw) for i in img])
    targets = (img.astype(np.float32) / 127.5 - 1).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), Truth(np.ascontiguousarray(targets), w)


def _torch_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
