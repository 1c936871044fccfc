"""The one small backend ABC every runtime backend implements. Never imports torch.

A backend runs the two graphs of an :class:`~restyle_rt.artifacts.Artifacts` directory. The host-side
``encode``/``synthesize`` pair is enough for the generic loop in :mod:`restyle_rt.runtime.loop`; backends that keep
tensors on a device override :meth:`Backend.run_loop` so latents and images stay there between steps.

Lifecycle: use as a context manager (``with backend: ...``) or call :meth:`close`. Output arrays returned by
``encode``/``synthesize`` may be views of buffers the backend reuses on its next call: copy what you keep.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..artifacts import Artifacts


@dataclass
class LoopResult:
    """What a residual loop returns.

    Attributes:
        latents: [B, S, 512] float32, final W+ latents.
        images: [B, 3, h, w] float32 in about [-1, 1], final synthesis images (unclamped).
        steps_used: [B] int, iterations each image ran (== n_iters unless early exit stopped it).
        step_latents: per step t=1..T, [B, S, 512] (only with return_steps).
        step_images: per step, [B, 3, h, w] (only with return_steps).
        stages: seconds spent per stage (``encoder``, ``synthesis``, ``copies``), when the backend measures them.
        feedback: [B, 3, H, W] float32, the last step's feedback (the host loop sets it: a warm start's state).
    """

    latents: np.ndarray
    images: np.ndarray
    steps_used: np.ndarray
    step_latents: list[np.ndarray] = field(default_factory=list)
    step_images: list[np.ndarray] = field(default_factory=list)
    stages: dict = field(default_factory=dict)
    feedback: np.ndarray | None = None

    def to_uint8(self) -> np.ndarray:
        """The final images as [B, h, w, 3] uint8 RGB, by the official ``tensor2im`` (clip to [-1, 1], x255,
        truncate; what ``restyle-rt invert`` writes)."""
        from .io import to_uint8

        return (
            np.stack([to_uint8(im) for im in self.images])
            if len(self.images)
            else np.zeros((0, *self.images.shape[2:], 3), np.uint8)
        )

    def save(self, directory: os.PathLike, names: Sequence[str] | None = None) -> list[Path]:
        """Write ``DIR/NAME.png`` per image (:meth:`to_uint8`) and ``DIR/latents.npy`` ([B, S, 512] float32; with
        steps also ``DIR/step_latents.npy`` [B, T, S, 512]). Each file appears complete or not at all
        (:mod:`restyle_rt.fsio`).

        Args:
            directory: created when missing.
            names: one per image (``/`` makes subfolders); default ``000``, ``001``, ...

        Returns:
            The paths written.

        Raises:
            InputError: ``names`` does not give one distinct, relative name per image.
        """
        from ..errors import InputError
        from ..fsio import save_npy
        from .io import write_png

        out, n = Path(directory), len(self.images)
        names = [f"{i:03d}" for i in range(n)] if names is None else [str(x) for x in names]
        if len(names) != n or len(set(names)) != n:
            raise InputError(
                f"save: expected {n} distinct names, one per image, got {len(names)} ({len(set(names))} distinct)"
            )
        bad = [x for x in names if not x or Path(x).is_absolute() or ".." in Path(x).parts]
        if bad:
            raise InputError(f"save: names must be relative paths inside {out}, got {bad}")
        written = []
        for name, img in zip(names, self.to_uint8()):
            write_png(out / f"{name}.png", img)
            written.append(out / f"{name}.png")
        written.append(save_npy(out / "latents.npy", np.ascontiguousarray(self.latents, np.float32), durable=True))
        if self.step_latents:
            steps = np.stack(self.step_latents, axis=1).astype(np.float32, copy=False)  # [B, T, S, 512]
            written.append(save_npy(out / "step_latents.npy", steps, durable=True))
        return written


class Backend(abc.ABC):
    """Runs ``encoder`` and ``synthesis`` of one artifacts directory.

    Class attributes (what the backend can do, declared once; ``auto``, the bench and the CLI read them, and
    ``tests/unit/test_layout.py`` checks that every backend declares them):
        name: the ``--backend`` name (its registry key).
        extra: the restyle-rt extra that installs its library (``pip install 'restyle-rt[<extra>]'``); ``""`` when
            the library is a core dependency.
        library: the import name of the library it runs on; its ``__version__`` is part of ``auto``'s cached
            decision.
        precisions: the ``precision=`` values its constructor accepts, its default first (``("fp32",)`` and no
            ``precision`` option: FP32 only).
        options: the keyword options its constructor accepts (``auto`` passes each backend only these).
        probed_by_auto: True for a CPU backend that ``auto`` times against the others; False for one that ``auto``
            tries first and takes when it starts (an accelerator).
        device_resident: True when run_loop keeps tensors on an accelerator.
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    library: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    options: ClassVar[frozenset[str]] = frozenset()
    probed_by_auto: ClassVar[bool] = False
    device_resident: ClassVar[bool] = False

    def __init__(self, artifacts: Artifacts):
        self.artifacts = artifacts
        self.spec = artifacts.spec

    @classmethod
    @abc.abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "") when this backend can run here, else (False, reason with the fix)."""

    @abc.abstractmethod
    def encode(self, image: np.ndarray, feedback: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """latent_next [B,S,512] = latent + E(concat(image, feedback)); inputs [B,3,H,W], [B,3,H,W], [B,S,512]."""

    @abc.abstractmethod
    def synthesize(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image [B,3,h,w], feedback [B,3,H,W]) = G(latent)."""

    def run_loop(
        self, images: np.ndarray, n_iters: int, return_steps: bool = False, early_exit: float | None = None
    ) -> LoopResult:
        """N residual steps from (latent_avg, avg_feedback). Default: the generic host loop."""
        from .loop import host_loop

        return host_loop(self, images, n_iters, return_steps=return_steps, early_exit=early_exit)

    def close(self) -> None:  # noqa: B027 - a hook: backends with nothing to release keep this no-op
        """Release sessions, engines and buffers. Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
