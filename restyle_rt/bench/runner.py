"""Run the benchmark: every (backend, batch, iters) configuration, timed in this process.

Per configuration: ``warmup`` untimed loops, then ``repeat`` timed loops of one batch each. Latency is
measured per loop with ``time.perf_counter`` (the whole ``run_loop`` / baseline loop, inputs already
preprocessed); the stage split comes from the loop itself. Peak resident memory is the kernel's high-water
mark (``VmHWM``, reset through ``/proc/self/clear_refs`` before each configuration) or, where that is not
possible, a psutil sampler.
Never imports torch unless a torch baseline is run.
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..errors import InputError
from ..runtime.hostinfo import cpu_model
from .targets import make_target, plan

log = logging.getLogger("restyle_rt")


@dataclass
class BenchConfig:
    """What to run.

    Attributes:
        artifacts_dir: the artifacts directory (runtime backends).
        checkpoint: its source checkpoint (torch baselines), or None.
        backends: resolved backend names, in run order.
        batches / iters: the grid.
        warmup / repeat: untimed and timed loops per configuration.
        early_exit: the loop's early-exit threshold, or None.
        threads: intra-op threads for every target.
        seed: of the synthetic input images.
        preset: the preset name when the source is one.
        precisions: each value is passed to every runtime backend as ``precision=`` (one target per value);
            None runs each target at its default. Recorded as ``precision`` in every result.
        accuracy: also compare every target's loop, step by step, with the FP32 reference
            (:mod:`restyle_rt.bench.accuracy`); recorded as ``accuracy`` in every result.
    """

    artifacts_dir: str
    checkpoint: str | None
    backends: list[str]
    batches: list[int] = field(default_factory=lambda: [1, 4, 8])
    iters: list[int] = field(default_factory=lambda: [1, 5, 10])
    warmup: int = 1
    repeat: int = 5
    early_exit: float | None = None
    threads: int = 1
    seed: int = 0
    preset: str | None = None
    precisions: list[str] | None = None
    accuracy: bool = True


def synthetic_images(n: int, hw, seed: int = 0) -> np.ndarray:
    """Deterministic photo-like inputs, preprocessed as the runtime does: [n, 3, H, W] float32 in [-1, 1].

    Low-frequency random colour fields plus a little noise, as uint8 RGB at 1.25x the input size, then the
    official resize + normalise (:func:`restyle_rt.runtime.io.preprocess`).
    """
    from ..runtime import io

    h, w = hw
    rng = np.random.default_rng(seed)
    src = (int(h * 1.25), int(w * 1.25))
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        coarse = rng.uniform(0, 255, (max(2, src[0] // 16), max(2, src[1] // 16), 3)).astype(np.uint8)
        img = io.resize_bilinear(coarse, src).astype(np.float32) + rng.normal(0, 12, (*src, 3))
        out[i] = io.preprocess(np.clip(img, 0, 255).astype(np.uint8), hw)
    return out


# --- memory -----------------------------------------------------------------------------------------------


class PeakRss:
    """Peak resident set size of this process over a ``with`` block, in MB.

    Uses the kernel's ``VmHWM`` after resetting it (``/proc/self/clear_refs`` = 5) when possible;
    otherwise samples ``psutil`` every 5 ms; otherwise reports ``resource.getrusage`` ``ru_maxrss``
    (the lifetime peak).
    """

    def __init__(self):
        self.peak_mb: float | None = None
        self.start_mb: float | None = None
        self.source = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.start_mb = current_rss_mb()
        if _reset_hwm():
            self.source = "VmHWM"
            return self
        try:
            import psutil
        except ImportError:
            self.source = "ru_maxrss (process lifetime)"
            return self
        self.source, proc, self.peak_mb = "psutil sampled 5 ms", psutil.Process(), 0.0

        def sample():
            while not self._stop.wait(0.005):
                self.peak_mb = max(self.peak_mb, proc.memory_info().rss / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self.source == "VmHWM":
            self.peak_mb = _status_kb("VmHWM") / 1024
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, current_rss_mb() or 0.0)
        else:
            import resource

            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def _status_kb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise KeyError(key)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kb("VmHWM")
        return True
    except (OSError, KeyError):
        return False


def current_rss_mb() -> float | None:
    """This process's resident set size now, in MB (None where it cannot be read)."""
    try:
        return _status_kb("VmRSS") / 1024
    except (OSError, KeyError):
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:
            return None


# --- machine ----------------------------------------------------------------------------------------------


def machine_info(threads: int) -> dict:
    """CPU model, cores, load, memory and library versions (torch read from metadata, never imported)."""
    versions = {"restyle_rt": __version__, "python": platform.python_version()}
    for pkg in (
        "numpy",
        "onnxruntime",
        "openvino",
        "torch",
        "onnx",
        "tensorrt",
        "tensorrt-rtx-cu13-bindings",
        "psutil",
    ):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    info = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": affinity,
        "platform": platform.platform(),
        "load_avg": _load(),
        "threads": threads,
        "versions": versions,
    }
    try:
        info["mem_total_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --- timing -----------------------------------------------------------------------------------------------


def summarize(times: list[float], batch: int) -> dict[str, float]:
    """Latency statistics of per-batch loop times (seconds): p50/p90/p99 per batch and per image,
    and throughput."""
    t = np.asarray(times, np.float64)
    p50, p90, p99 = (float(np.percentile(t, q)) for q in (50, 90, 99))
    return {
        "p50_s": p50,
        "p90_s": p90,
        "p99_s": p99,
        "mean_s": float(t.mean()),
        "min_s": float(t.min()),
        "p50_per_image_s": p50 / batch,
        "p90_per_image_s": p90 / batch,
        "p99_per_image_s": p99 / batch,
        "images_per_s": batch / p50,
    }


def time_config(target, x: np.ndarray, n_iters: int, warmup: int, repeat: int, early_exit: float | None) -> dict:
    """Warm up and time one (target, batch, iters) configuration; returns its result record (no metadata)."""
    load_before = _load()
    gc.collect()
    with PeakRss() as mem:
        for _ in range(warmup):
            target.run(x, n_iters, early_exit)
        times, stage_sum, steps = [], {}, None
        for _ in range(repeat):
            t0 = time.perf_counter()
            stages, steps = target.run(x, n_iters, early_exit)
            times.append(time.perf_counter() - t0)
            for k, v in stages.items():
                stage_sum[k] = stage_sum.get(k, 0.0) + v
    b = x.shape[0]
    rec = summarize(times, b)
    stages = {k: v / repeat for k, v in stage_sum.items()}  # mean seconds per batch loop
    stages["glue"] = max(0.0, rec["mean_s"] - sum(stages.values()))  # loop set-up, result assembly, Python
    rec.update(
        stages=stages,
        samples_s=times,
        peak_rss_mb=mem.peak_mb,
        rss_start_mb=mem.start_mb,
        peak_rss_source=mem.source,
        device_mem_mb=target.device_memory_mb(),
        load_before=load_before,
        load_after=_load(),
    )
    if early_exit is not None:
        rec["steps_used"] = [int(s) for s in steps]
        rec["steps_used_mean"] = float(np.mean(steps))
        rec["early_exit_applied"] = target.kind == "runtime"
    return rec


def run(cfg: BenchConfig, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every configuration of ``cfg``; one target alive at a time (closed before the next is built).

    Args:
        cfg: the configuration grid.
        on_result: called with each result record as it is made (the CLI prints progress with it).

    Returns:
        The result records (see :mod:`restyle_rt.bench.report` for the fields).

    Raises:
        InputError: bad grid values or a batch outside the artifacts' profile.
    """
    from .. import artifacts

    validate_grid(cfg)
    art = artifacts.load(cfg.artifacts_dir)
    prof = art.profile
    bad = [b for b in cfg.batches if not prof.min <= b <= prof.max]
    if bad:
        raise InputError(
            f"batch {bad} outside the artifacts' batch profile [{prof.min}, {prof.max}]; "
            f"re-export with --max-batch {max(cfg.batches)}"
        )
    pairs = plan(cfg.backends, cfg.precisions)  # refuses a precision a target cannot run, before any work
    truth = None
    if cfg.accuracy and cfg.checkpoint is not None and _fitted_source(art):
        from .accuracy import fitted_targets

        x_all, truth = fitted_targets(cfg.checkpoint, max(cfg.batches), art.spec.input_hw)
        log.info("bench: fitted checkpoint: inputs are %d images its generator drew from known latents", len(x_all))
    else:
        x_all = synthetic_images(max(cfg.batches), art.spec.input_hw, cfg.seed)  # [Bmax, 3, H, W]
    refs = None
    if cfg.accuracy:
        from .accuracy import reference_steps

        xs = {b: np.ascontiguousarray(x_all[:b]) for b in cfg.batches}
        refs = reference_steps(art, cfg.checkpoint, xs, max(cfg.iters), cfg.threads)
    results = []
    for name, precision in pairs:
        results += _run_target(cfg, art, name, precision, x_all, refs, on_result, truth)
    return results


def _fitted_source(art) -> bool:
    from .accuracy import _torch_importable, is_fitted

    return is_fitted(art) and _torch_importable()


def _run_target(cfg: BenchConfig, art, name: str, precision, x_all, refs, on_result, truth=None) -> list[dict]:
    """Every (batch, iters) configuration of one target; the target is closed before returning."""
    t0 = time.perf_counter()
    rss0 = current_rss_mb()
    target = make_target(name, art, cfg.checkpoint, cfg.threads, precision)
    load_s, rss_loaded = time.perf_counter() - t0, current_rss_mb()
    log.info("bench: %s %s ready in %.1f s (threads %s)", name, target.precision, load_s, target.threads)
    results = []
    try:
        for b in cfg.batches:
            x = np.ascontiguousarray(x_all[:b])
            agree = None
            if refs is not None:
                from .accuracy import Steps, agreement

                got = Steps(name, *target.steps(x, max(cfg.iters)))
            for n in cfg.iters:
                rec = {
                    "backend": name,
                    "precision": target.precision,
                    "kind": target.kind,
                    "batch": b,
                    "iters": n,
                    "early_exit": cfg.early_exit,
                    "warmup": cfg.warmup,
                    "repeat": cfg.repeat,
                    "threads": target.threads,
                    "load_s": load_s,
                    "rss_before_load_mb": rss0,
                    "rss_loaded_mb": rss_loaded,
                }
                rec.update(time_config(target, x, n, cfg.warmup, cfg.repeat, cfg.early_exit))
                if refs is not None:
                    agree = agreement(refs[b], got, n, truth.take(b) if truth is not None else None)
                rec["accuracy"] = agree
                results.append(rec)
                if on_result:
                    on_result(rec)
    finally:
        target.close()
        del target
        gc.collect()
    return results


def validate_grid(cfg: BenchConfig) -> None:
    """Raise :class:`InputError` on an empty or non-positive grid value, or bad warmup/repeat."""
    for what, vals in (("batch", cfg.batches), ("iters", cfg.iters)):
        if not vals or any(int(v) < 1 for v in vals):
            raise InputError(f"--{what}: values must be positive integers, got {vals}")
    if cfg.warmup < 0 or cfg.repeat < 1:
        raise InputError(f"--warmup must be >= 0 and --repeat >= 1, got {cfg.warmup} and {cfg.repeat}")
    if not cfg.backends:
        raise InputError("no backend to run (none available, and no --checkpoint for the torch baselines)")
    if cfg.precisions is not None and not cfg.precisions:
        raise InputError("--precision: expected comma-separated precisions, got none")
