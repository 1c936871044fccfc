"""InterFaceGAN editing on inverted latents (the official ``LatentEditor.apply_interfacegan``).

For a direction d (broadcast to the latent's [S, 512]) and factors f: ``w' = w + f * d``, decoded by the synthesis
graph with its fixed noise. A factor range follows the official ``range(*factor_range)``: ``(-5, 5)`` gives
-5..4 (the upper end is excluded). The official script builds strips per direction ``[input, inversion, edits...]``
and, when every direction has the same factor count, stacks them vertically into one coupled image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .directions import fit_direction


def parse_factors(text: str | Sequence[float]) -> list[float]:
    """Factors from ``"F"`` (one factor), ``"A,B"`` or ``"A,B,STEP"`` (``range(A, B[, STEP])``, integers).

    Raises:
        InputError: not numbers, a range with non-integers, or an empty range.
    """
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        vals = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise InputError(f"factors must be numbers: 'F' or 'A,B[,STEP]' (a range), got {text!r}") from None
    if not vals or not all(np.isfinite(vals)):
        raise InputError(f"factors must be finite numbers, got {text!r}")
    if len(vals) == 1:
        return vals
    if len(vals) > 3 or not all(v == int(v) for v in vals):
        raise InputError(f"a factor range is 'A,B[,STEP]' of integers (official range(*factor_range)), got {text!r}")
    out = [float(f) for f in range(*(int(v) for v in vals))]
    if not out:
        raise InputError(f"factor range {text!r} is empty (range({', '.join(parts)}))")
    return out


def edit_latents(latents: np.ndarray, direction: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Edited latents [N, F, S, 512]: ``latents[:, None] + f * direction`` for each factor f.

    Args:
        latents: [N, S, 512] inverted latents.
        direction: any shape :func:`~restyle_rt.workflows.directions.fit_direction` accepts.
        factors: F factors.
    """
    lat = np.asarray(latents, np.float32)
    if lat.ndim != 3 or lat.shape[2] != 512:
        raise InputError(f"expected latents [N, S, 512], got {list(lat.shape)}")
    d = fit_direction(direction, lat.shape[1])  # [S, 512]
    f = np.asarray(factors, np.float32).reshape(1, -1, 1, 1)  # [1, F, 1, 1]
    return lat[:, None] + f * d[None, None]  # [N, F, S, 512]


def render_edits(
    inv, latents: np.ndarray, direction: np.ndarray, factors: Sequence[float], progress=None
) -> np.ndarray:
    """Images [N, F, 3, h, w] of every edit, decoded by the :class:`~restyle_rt.Inverter` ``inv``
    (:meth:`~restyle_rt.Inverter.synthesize`: profile-sized batches)."""
    edited = edit_latents(latents, direction, factors)  # [N, F, S, 512]
    n, k = edited.shape[:2]
    imgs = inv.synthesize(edited.reshape(n * k, *edited.shape[2:]), progress)
    return imgs.reshape(n, k, *imgs.shape[1:])  # [N, F, 3, h, w]
