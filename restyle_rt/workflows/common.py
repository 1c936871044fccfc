"""Helpers the workflows share: latents files. (Batched synthesis within the artifacts' profile is
:meth:`restyle_rt.Inverter.synthesize`.)"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError


def load_latents(path: os.PathLike, n_styles: int) -> tuple[np.ndarray, list[str]]:
    """Final latents [N, S, 512] and their names from an ``invert --save-latents`` file (or a plain .npy).

    Accepts ``latents.npy`` as ``restyle-rt invert`` writes it ([N, T, S, 512], final step = ``steps_used``,
    names from the ``latents.json`` beside it), or any [N, S, 512] / [S, 512] array.

    Raises:
        InputError: unreadable file, wrong shape, a style count other than ``n_styles``, or non-finite values.
    """
    p = Path(os.fsdecode(path))
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read latents from {p}: {e}") from None
    names: Sequence[str] | None = None
    index = p.with_suffix(".json")
    if arr.ndim == 4 and index.is_file():
        meta = json.loads(index.read_text())
        steps = np.asarray(meta.get("steps_used", [arr.shape[1]] * arr.shape[0]), np.int64)
        arr = arr[np.arange(arr.shape[0]), np.clip(steps, 1, arr.shape[1]) - 1]  # [N, S, 512]
        names = meta.get("inputs")
    elif arr.ndim == 4:
        arr = arr[:, -1]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (n_styles, 512):
        raise InputError(f"{p}: latents of shape {list(arr.shape)} do not fit this model's [N, {n_styles}, 512]")
    if not np.isfinite(arr).all():
        raise InputError(f"{p}: latents have non-finite values")
    if names is None or len(names) != arr.shape[0]:
        names = [f"{p.stem}_{i:04d}" for i in range(arr.shape[0])]
    return np.ascontiguousarray(arr, np.float32), [str(n) for n in names]
