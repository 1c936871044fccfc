"""Encoder bootstrapping (the official ``scripts/encoder_bootstrapping_inference.py``, e.g. faces -> toonify).

Step 1 runs model 1 from its own seeds: ``w_1 = latent_avg_1 + E_1(x, avg_feedback_1)``, ``(img_1, y_1) = G_1(w_1)``.
Steps 2..N+1 run model 2 from model 1's latent and pooled image: ``w_t = w_{t-1} + E_2(x, y_{t-1})``,
``(img_t, y_t) = G_2(w_t)``. Model 2's ``latent_avg`` is never used. Both models must share the style count and the
encoder input size (the official script pools model 2's images with model 1's pool, so the sizes must agree).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..runtime.backend import LoopResult
from ..runtime.loop import check_iters, run_in_chunks


def check_pair(first, second) -> None:
    """Refuse a bootstrap pair of :class:`~restyle_rt.artifacts.Artifacts` whose latents or encoder inputs do not
    fit each other (both directories and values named)."""
    a, b = first.spec, second.spec
    if a.n_styles != b.n_styles:
        raise InputError(
            f"bootstrap pair mismatch: {first.root} has {a.n_styles} styles, "
            f"{second.root} has {b.n_styles}; both generators must share W+ [S, 512]"
        )
    if tuple(a.input_hw) != tuple(b.input_hw):
        raise InputError(
            f"bootstrap pair mismatch: encoder input {tuple(a.input_hw)} ({first.root}) vs "
            f"{tuple(b.input_hw)} ({second.root}); both encoders must take the same size"
        )


def bootstrap(first, second, images, n_iters: int = 1) -> LoopResult:
    """Invert with model 1 for one step, then refine with model 2 for ``n_iters`` steps.

    Args:
        first: the initialising :class:`~restyle_rt.Inverter` (e.g. the FFHQ encoder).
        second: the refining Inverter (e.g. toonify); its generator draws steps 2..N+1.
        images: anything :meth:`Inverter.preprocess` takes.
        n_iters: model-2 steps (the official README recommends 1).

    Returns:
        LoopResult with ``n_iters + 1`` entries in ``step_latents``/``step_images`` (step 1 is model 1's
        inversion) and the final latents/images of model 2. Images of step 1 have model 1's output size.

    Raises:
        InputError: a mismatched pair, bad images or arguments.
    """
    check_iters(n_iters, None)
    check_pair(first.artifacts, second.artifacts)
    x = second.preprocess(images)  # [B, 3, H, W]
    if x.shape[0] == 0:
        raise InputError("no images to invert")
    # per chunk: [(latents, images) per step]
    chunks = run_in_chunks(_common_profile(first, second), x, lambda xb: list(_chunk_steps(first, second, xb, n_iters)))
    lat = [np.concatenate([c[t][0] for c in chunks]) for t in range(n_iters + 1)]
    img = [np.concatenate([c[t][1] for c in chunks]) for t in range(n_iters + 1)]
    return LoopResult(
        latents=lat[-1],
        images=img[-1],
        steps_used=np.full(x.shape[0], n_iters + 1, np.int64),
        step_latents=lat,
        step_images=img,
    )


def _chunk_steps(first, second, x: np.ndarray, n_iters: int):
    """Yield (latents, images) copies for step 1 (model 1) and steps 2..N+1 (model 2) of one batch."""
    b = x.shape[0]
    a1 = first.artifacts
    lat = np.repeat(a1.latent_avg[None], b, axis=0)  # [b, S, 512]
    fb = np.repeat(a1.avg_feedback[None], b, axis=0)  # [b, 3, H, W]
    backend = first.backend
    for _ in range(n_iters + 1):
        lat = np.array(backend.encode(x, fb, lat))  # [b, S, 512]
        img, fb = backend.synthesize(lat)  # [b, 3, h, w], [b, 3, H, W]
        img, fb = np.array(img), np.array(fb)
        yield lat, img
        backend = second.backend


def _common_profile(first, second):
    """The batch range both backends accept."""
    from ..spec import BatchProfile

    p1, p2 = first.profile, second.profile
    lo, hi = max(p1.min, p2.min), min(p1.max, p2.max)
    if lo > hi:
        raise InputError(
            f"bootstrap pair: batch profiles [{p1.min}, {p1.max}] and [{p2.min}, {p2.max}] do not "
            "overlap; re-export one of them with a compatible --max-batch"
        )
    return BatchProfile(lo, min(max(p1.opt, lo), hi), hi)
