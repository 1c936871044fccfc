"""What the benchmark times: runtime backends and the two in-process torch baselines.

Every target runs the whole ReStyle loop on one preprocessed batch and returns per-stage seconds:

* a runtime backend (``ort``, ``trt``, ...) from :mod:`restyle_rt.runtime.backends`, through its
  ``run_loop`` (stages measured by the loop itself: ``encoder``, ``synthesis``, ``copies``);
* ``torch-official``: the official formulation as the official code runs it
  (``TorchModels.encoder_official`` + ``synthesis_official``: per-sample grouped conv + upfirdn2d), FP32
  eager under ``torch.no_grad``, the latents copied to the host with ``.cpu().numpy()`` per image every
  step as ``run_on_batch`` does, and the average image computed once when the target is made (not timed);
* ``torch``: the export formulation (``TorchModels.encoder`` / ``synthesis``) in eager torch, same loop.

The baselines need torch and the source checkpoint; runtime backends need neither. A runtime backend
registered under a baseline's name (``torch``) is shadowed by the baseline, which measures the same
formulation.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import BackendUnavailable, InputError

log = logging.getLogger("restyle_rt")

BASELINES = ("torch-official", "torch")


def runtime_names() -> tuple[str, ...]:
    """Registered runtime backends the bench can run (``auto`` and names shadowed by baselines excluded)."""
    from ..runtime.backends import REGISTRY

    return tuple(n for n in REGISTRY if n not in BASELINES)


def known_names() -> tuple[str, ...]:
    """Every name ``--backend`` accepts."""
    return runtime_names() + BASELINES


def default_threads() -> int:
    """Intra-op threads for every target: exactly what the ort backend uses (the CPUs this process may run on)."""
    from ..runtime.backends.ort import default_threads as ort_default_threads  # onnxruntime is imported lazily

    return ort_default_threads()


def resolve_backends(requested: list[str] | None, have_checkpoint: bool) -> list[str]:
    """The backends to run, in order.

    Args:
        requested: names from ``--backend``, or None for the default (every available runtime backend,
            then the baselines when a checkpoint is known and torch is importable).
        have_checkpoint: whether the source checkpoint is known (baselines need it).

    Raises:
        InputError: an unknown name, or a baseline asked for without a checkpoint.
        BackendUnavailable: a runtime backend asked for by name cannot run here.
    """
    from ..runtime.backends import available

    if requested:
        unknown = [n for n in requested if n not in known_names()]
        if unknown:
            raise InputError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(known_names())}")
        for n in requested:
            if n in BASELINES and not have_checkpoint:
                raise InputError(
                    f"baseline {n!r} needs the source checkpoint: pass --checkpoint PATH (presets have it)"
                )
            if n not in BASELINES:
                ok, why = available(n)
                if not ok:
                    raise BackendUnavailable(f"backend {n!r} is unavailable: {why}")
        return list(dict.fromkeys(requested))
    names = []
    for n in runtime_names():
        ok, why = available(n)
        if ok:
            names.append(n)
        else:
            log.info("bench: skipping backend %s (%s)", n, why)
    if not have_checkpoint:
        log.info("bench: skipping torch baselines (no --checkpoint)")
    elif not _torch_importable():
        log.info("bench: skipping torch baselines (torch is not installed: pip install 'restyle-rt[export]')")
    else:
        names += list(BASELINES)
    return names


def _torch_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class RuntimeTarget:
    """A runtime backend over an artifacts directory.

    Args:
        name: registered backend name.
        artifacts: a loaded :class:`~restyle_rt.artifacts.Artifacts`.
        threads: intra-op threads, passed when the backend takes a ``threads`` option.
        precision: passed as ``precision=`` when given; a backend without that option runs only its default
            (``"fp32"``), and anything else is refused.

    Raises:
        InputError: a precision the backend does not take.
    """

    kind = "runtime"

    def __init__(self, name: str, artifacts, threads: int, precision: str | None = None):
        from ..runtime.backends import backend_class, get_backend

        self.name = name
        cls = backend_class(name)  # what it takes: its declared options and precisions
        opts = {"threads": threads} if "threads" in cls.options else {}
        if "precision" in cls.options:
            default = cls.precisions[0]
            if precision is not None:
                opts["precision"] = precision
        else:
            default = check_default_precision(name, precision)
        self.backend = get_backend(name, artifacts, **opts)
        self.precision = getattr(self.backend, "precision", None) or precision or default
        self.threads = {"intra_op": getattr(self.backend, "threads", None)}
        self.profile = artifacts.profile

    def steps(self, x: np.ndarray, n_iters: int):
        """Every step's (latents, images) of one untimed loop on ``x`` (for the accuracy columns)."""
        res = self.backend.run_loop(x, n_iters, return_steps=True)
        return res.step_latents, res.step_images

    def run(self, x: np.ndarray, n_iters: int, early_exit: float | None) -> tuple[dict[str, float], np.ndarray]:
        """One loop on batch ``x`` [B, 3, H, W]; returns (stage seconds, steps used [B])."""
        res = self.backend.run_loop(x, n_iters, early_exit=early_exit)
        return dict(res.stages), np.asarray(res.steps_used)

    def device_memory_mb(self) -> float | None:
        """Device memory in use (MB) on GPU backends when measurable, else None."""
        if not getattr(self.backend, "device_resident", False):
            return None
        return _nvml_used_mb(getattr(self.backend, "device_id", 0))

    def close(self) -> None:
        self.backend.close()


class TorchTarget:
    """An eager-torch baseline (see the module docstring).

    Args:
        name: ``"torch-official"`` or ``"torch"``.
        checkpoint: the official checkpoint the artifacts were exported from.
        threads: ``torch.set_num_threads`` value (the same as the runtime backends' intra-op threads).
        precision: None or ``"fp32"`` (the baselines run FP32 only).
    """

    kind = "baseline"

    def __init__(self, name: str, checkpoint, threads: int, precision: str | None = None):
        import torch

        self.precision = check_default_precision(name, precision)

        from ..export.checkpoint import load_checkpoint
        from ..export.reference import TorchModels

        self.name, self._torch = name, torch
        torch.set_num_threads(threads)
        self.threads = {"intra_op": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}
        models = TorchModels.from_checkpoint(load_checkpoint(checkpoint))
        official = name == "torch-official"
        self.enc = models.encoder_official if official else models.encoder
        self.syn = models.synthesis_official if official else models.synthesis
        with torch.no_grad():  # run_on_batch's `avg`: computed once, before the timed loop
            self.y0 = models.avg_feedback().clone()  # [3, H, W]
        self.w0 = models.ckpt.latent_avg.clone()  # [S, 512]
        if official:  # the official code never builds the export formulation: drop it from memory
            models.encoder = models.synthesis = None
        else:
            models.encoder_official = models.synthesis_official = None
        self.models = models
        self.profile = None

    def run(self, x: np.ndarray, n_iters: int, early_exit: float | None) -> tuple[dict[str, float], np.ndarray]:
        """One official-style loop on ``x`` [B, 3, H, W] (``early_exit`` is not part of it and is ignored)."""
        torch = self._torch
        stages = {"encoder": 0.0, "synthesis": 0.0, "copies": 0.0}
        with torch.no_grad():
            t0 = time.perf_counter()
            xt = torch.from_numpy(x)  # [B, 3, H, W]
            b = xt.shape[0]
            w = self.w0[None].repeat(b, 1, 1)  # [B, S, 512]
            y = self.y0[None].repeat(b, 1, 1, 1)  # [B, 3, H, W]
            kept: list[np.ndarray] = []
            stages["copies"] += time.perf_counter() - t0
            for _ in range(n_iters):
                t0 = time.perf_counter()
                w = self.enc(xt, y, w)  # [B, S, 512]
                t1 = time.perf_counter()
                img, y = self.syn(w)  # [B, 3, h, w], [B, 3, H, W]
                t2 = time.perf_counter()
                kept.extend(w[i].cpu().numpy() for i in range(b))  # run_on_batch: latent[i].cpu().numpy()
                stages["copies"] += time.perf_counter() - t2
                stages["encoder"] += t1 - t0
                stages["synthesis"] += t2 - t1
        return stages, np.full(b, n_iters, dtype=np.int64)

    def steps(self, x: np.ndarray, n_iters: int):
        """Every step's (latents, images) of one untimed loop on ``x`` (for the accuracy columns)."""
        torch = self._torch
        lats, imgs = [], []
        with torch.no_grad():
            xt = torch.from_numpy(x)  # [B, 3, H, W]
            w = self.w0[None].repeat(x.shape[0], 1, 1)  # [B, S, 512]
            y = self.y0[None].repeat(x.shape[0], 1, 1, 1)  # [B, 3, H, W]
            for _ in range(n_iters):
                w = self.enc(xt, y, w)
                img, y = self.syn(w)
                lats.append(w.numpy().copy())
                imgs.append(img.numpy().copy())
        return lats, imgs

    def device_memory_mb(self) -> float | None:
        """None: the baselines run on the CPU."""
        return None

    def close(self) -> None:
        self.models = self.enc = self.syn = None


def takes_precision(name: str) -> bool:
    """Whether target ``name`` takes a ``precision=`` option (its class declares it in ``options``; baselines
    never do)."""
    if name in BASELINES:
        return False
    from ..runtime.backends import backend_class

    return "precision" in backend_class(name).options


def supported_precisions(name: str) -> tuple[str, ...]:
    """The precisions backend ``name`` runs (its class's ``precisions``); ``("fp32",)`` for the rest."""
    if not takes_precision(name):
        return ("fp32",)
    from ..runtime.backends import backend_class

    return tuple(backend_class(name).precisions)


def plan(names: list[str], precisions: list[str] | None) -> list[tuple[str, str | None]]:
    """The (target, precision) pairs to run, in order.

    Each target runs the listed precisions it supports; the others are skipped for it (logged). A target without
    a precision option runs only ``fp32``.

    Raises:
        InputError: a target supports none of the listed precisions.
    """
    if not precisions:
        return [(n, None) for n in names]
    out = []
    for n in names:
        if takes_precision(n):
            ok = supported_precisions(n)
            mine = [p for p in precisions if p in ok]
            if not mine:
                raise InputError(f"backend {n!r} runs {' | '.join(ok)}; got --precision {','.join(precisions)}")
            if len(mine) < len(precisions):
                log.info(
                    "bench: %s runs %s; skipping %s for it",
                    n,
                    "|".join(ok),
                    ",".join(p for p in precisions if p not in ok),
                )
            out += [(n, p) for p in mine]
            continue
        check_default_precision(n, None if "fp32" in precisions else ",".join(precisions))
        skipped = [p for p in precisions if p != "fp32"]
        if skipped:
            log.info("bench: %s runs fp32 only (no precision option); skipping %s for it", n, ",".join(skipped))
        out.append((n, "fp32"))
    return out


def check_default_precision(name: str, precision: str | None) -> str:
    """``"fp32"`` when ``precision`` is None or ``"fp32"``; else InputError (``name`` takes no precision option)."""
    if precision not in (None, "fp32"):
        raise InputError(
            f"backend {name!r} takes no precision option and runs fp32 only; got --precision {precision}: "
            f"drop it for {name}, or benchmark a backend that has it (e.g. openvino)"
        )
    return "fp32"


def make_target(name: str, artifacts, checkpoint, threads: int, precision: str | None = None):
    """A :class:`RuntimeTarget` or :class:`TorchTarget` for ``name`` (``precision`` as ``precision=``)."""
    if name in BASELINES:
        if checkpoint is None:
            raise InputError(f"baseline {name!r} needs --checkpoint")
        return TorchTarget(name, checkpoint, threads, precision)
    return RuntimeTarget(name, artifacts, threads, precision)


def _nvml_used_mb(device_id: int) -> float | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(int(device_id))
        return pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
    except Exception:  # no driver / no device: not measurable
        return None
