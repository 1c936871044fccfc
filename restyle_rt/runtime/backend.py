"""The one small backend ABC every runtime backend implements. Never imports torch.

A backend runs the two graphs of an :class:`~restyle_rt.artifacts.Artifacts` directory. The host-side
``encode``/``synthesize`` pair is enough for the generic loop in :mod:`restyle_rt.runtime.loop`; backends that keep
tensors on a device override :meth:`Backend.run_loop` so latents and images stay there between steps.

Lifecycle: use as a context manager (``with backend: ...``) or call :meth:`close`. Output arrays returned by
``encode``/``synthesize`` may be views of buffers the backend reuses on its next call: copy what you keep.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, List, Optional, Tuple

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
    """

    latents: np.ndarray
    images: np.ndarray
    steps_used: np.ndarray
    step_latents: List[np.ndarray] = field(default_factory=list)
    step_images: List[np.ndarray] = field(default_factory=list)
    stages: dict = field(default_factory=dict)


class Backend(abc.ABC):
    """Runs ``encoder`` and ``synthesis`` of one artifacts directory.

    Class attributes:
        name: the ``--backend`` name.
        extra: what to ``pip install`` when it is unavailable (named in ``BackendUnavailable``).
        device_resident: True when run_loop keeps tensors on an accelerator.
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    device_resident: ClassVar[bool] = False

    def __init__(self, artifacts: Artifacts):
        self.artifacts = artifacts
        self.spec = artifacts.spec

    @classmethod
    @abc.abstractmethod
    def available(cls) -> Tuple[bool, str]:
        """(True, "") when this backend can run here, else (False, reason with the fix)."""

    @abc.abstractmethod
    def encode(self, image: np.ndarray, feedback: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """latent_next [B,S,512] = latent + E(concat(image, feedback)); inputs [B,3,H,W], [B,3,H,W], [B,S,512]."""

    @abc.abstractmethod
    def synthesize(self, latent: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(image [B,3,h,w], feedback [B,3,H,W]) = G(latent)."""

    def run_loop(self, images: np.ndarray, n_iters: int, return_steps: bool = False,
                 early_exit: Optional[float] = None) -> LoopResult:
        """N residual steps from (latent_avg, avg_feedback). Default: the generic host loop."""
        from .loop import host_loop

        return host_loop(self, images, n_iters, return_steps=return_steps, early_exit=early_exit)

    def close(self) -> None:
        """Release sessions, engines and buffers. Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
