"""Accuracy beside speed: each benchmarked target's loop, step by step, against the FP32 reference loop.

The reference is the official-formulation FP32 torch loop (:func:`restyle_rt.export.reference.reference_loop`)
when the source checkpoint is known and torch is installed, else the ``ort`` backend in FP32. For every
(target, precision, batch) one extra, untimed loop of ``max(iters)`` steps runs on the same inputs as the timed
ones, and each step's latent and image are compared with the reference's (:func:`restyle_rt.parity.compare`):
latent rel-L2, image rel-L2 and image PSNR (peak-to-peak 2), one value per step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from ..parity import compare

log = logging.getLogger("restyle_rt")


@dataclass
class Steps:
    """Per-step loop outputs: latents [B, S, 512] and images [B, 3, h, w], one array per step."""

    label: str
    latents: List[np.ndarray]
    images: List[np.ndarray]


def reference_steps(art, checkpoint: Optional[str], xs: Dict[int, np.ndarray], n_iters: int,
                    threads: int) -> Dict[int, Steps]:
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


def _torch_reference(checkpoint: str, xs: Dict[int, np.ndarray], n_iters: int, threads: int) -> Dict[int, Steps]:
    import torch

    from ..export.checkpoint import load_checkpoint
    from ..export.reference import TorchModels, reference_loop

    torch.set_num_threads(threads)
    models = TorchModels.from_checkpoint(load_checkpoint(checkpoint))
    out = {}
    with torch.no_grad():
        for b, x in xs.items():
            steps = reference_loop(models, torch.from_numpy(x), n_iters, official=True)
            out[b] = Steps("torch-official fp32", [s.latent.numpy().copy() for s in steps],
                           [s.image.numpy().copy() for s in steps])
    return out


def agreement(ref: Steps, got: Steps, n_iters: int) -> dict:
    """Per-step agreement of ``got`` with ``ref`` over the first ``n_iters`` steps (JSON-ready)."""
    lat = [compare(got.latents[t], ref.latents[t]) for t in range(n_iters)]
    img = [compare(got.images[t], ref.images[t]) for t in range(n_iters)]
    return {
        "reference": ref.label,
        "latent_rel_l2": [r.rel_l2 for r in lat],
        "image_rel_l2": [r.rel_l2 for r in img],
        "image_psnr_db": [r.psnr_db if np.isfinite(r.psnr_db) else None for r in img],  # None: identical
    }


def _torch_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
