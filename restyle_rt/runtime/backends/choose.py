"""Backend ``auto``: TensorRT when usable, else the CPU backend that *measures* fastest on this machine.

1. The backends that do not declare ``probed_by_auto`` (``trt``) are tried first, in the order of
   :data:`~restyle_rt.runtime.backends.AUTO_ORDER`; the first that starts is used, with no probe.
2. Otherwise the installed CPU backends (:data:`MEASURED`: those declaring ``probed_by_auto``) are timed, each at
   the precision its own rule gives it (a precision the caller names is passed on unchanged): :data:`WARMUP` then
   :data:`REPEATS` loop steps (``encode`` + ``synthesize``) at the caller's batch (``$RESTYLE_RT_AUTO_BATCH``
   overrides it; default 1; clamped to the batch profile), one candidate alive at a time; the smallest best-of time
   wins. A candidate that fails to start or to run is closed and skipped, its reason logged.
3. The decision is cached as JSON under ``auto-backend/`` in :func:`restyle_rt.fsio.cache_root`, keyed by
   :func:`key_parts`; a later start with the same key starts only the winner. The choice and the times are logged.

``$RESTYLE_RT_AUTO_PROBE``: ``1`` (default) measure or use the cached decision; ``0`` no probe, the static order of
``AUTO_ORDER`` (first that starts); ``refresh`` re-measure and overwrite the cached decision. Why it measures:
docs/architecture.md; what a probe costs: benchmarks/README.md.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ... import __version__, fsio
from ...artifacts import Artifacts, sha256_file
from ...errors import ArtifactError, BackendUnavailable, InputError
from ..backend import Backend
from ..hostinfo import cpu_id
from . import AUTO_ORDER, RegistryView, accepted_options, available, backend_class, measured

log = logging.getLogger("restyle_rt")

# CPU backends chosen by measurement (in AUTO_ORDER's order when not measured): derived from the classes'
# `probed_by_auto` each time it is read
MEASURED = RegistryView(measured)
ENV_PROBE, ENV_BATCH = "RESTYLE_RT_AUTO_PROBE", "RESTYLE_RT_AUTO_BATCH"
WARMUP, REPEATS = 1, 2
PROBE_VERSION = 2  # bump when what the probe measures changes: old cached decisions then no longer match
_STARTUP_ERRORS = (BackendUnavailable, ArtifactError, InputError)
_logged_choices: set = set()


def choose(artifacts: Artifacts, opts: dict, batch: int | None = None) -> Backend:
    """Start the backend ``auto`` stands for (module docstring); logs the choice and every backend skipped.

    ``batch`` is the batch the caller will run (``invert --batch``; ``Inverter.load(probe_batch=)``): the probe times it
    unless ``$RESTYLE_RT_AUTO_BATCH`` says otherwise (:func:`probe_batch`).

    Raises:
        BackendUnavailable: no backend is installed, or (with the type every candidate raised, when they agree)
            none could start on these artifacts; the message lists each reason.
    """
    reasons: list[str] = []
    errors: list[Exception] = []
    for name in [n for n in AUTO_ORDER if n not in MEASURED]:
        be = _start(name, artifacts, opts, reasons, errors)
        if be is not None:
            _log_choice(be, reasons)
            return be
    cands = []
    for name in [n for n in AUTO_ORDER if n in MEASURED]:
        ok, why = available(name)
        if ok:
            cands.append(name)
        else:
            reasons.append(f"{name}: {why}")
    mode = os.environ.get(ENV_PROBE, "1").strip().lower()
    if mode not in ("0", "1", "refresh"):
        raise InputError(f"${ENV_PROBE}={mode!r}; expected 1 (measure, default), 0 (static order) or refresh")
    if mode == "0" or len(cands) < 2:
        for name in cands:
            be = _start(name, artifacts, opts, reasons, errors)
            if be is not None:
                _log_choice(be, reasons, "static order" if mode == "0" else "the only CPU backend installed")
                return be
        raise _none_started(reasons, errors)
    return _measured(artifacts, cands, opts, reasons, errors, refresh=mode == "refresh", batch=batch)


def _measured(artifacts, cands, opts, reasons, errors, refresh: bool, batch: int | None) -> Backend:
    batch = probe_batch(artifacts, batch)
    parts = key_parts(artifacts, cands, opts, batch)
    path = cache_path(parts)
    rec = None if refresh else _read(path)
    if rec is not None and rec.get("choice") in cands:
        be = _start(rec["choice"], artifacts, opts, reasons, errors)
        if be is not None:
            _log_choice(
                be,
                reasons,
                f"cached decision {path}, measured {rec.get('measured_at')}: "
                f"{_fmt(rec.get('times_s', {}))} per step at batch {batch}",
            )
            return be
        log.info("backend auto: the cached choice %s no longer starts; measuring again", rec["choice"])
    times: dict[str, float] = {}
    best, kept = None, None  # (name, seconds); the last candidate measured, when it is the fastest so far
    load = _load_average()
    for name in cands:  # one backend alive at a time: the probe's peak memory is the largest one's, not their sum
        if kept is not None:
            kept.close()
            kept = None
        be = _start(name, artifacts, opts, reasons, errors)
        if be is None:
            continue
        try:
            t = measure(be, batch)
        except Exception as e:  # noqa: BLE001 - whatever a candidate raises while running, it is skipped
            reasons.append(f"{name}: failed during the probe ({type(e).__name__}: {e})")
            errors.append(BackendUnavailable(reasons[-1]))
            be.close()
            continue
        times[_label(be)] = t
        if best is None or t < best[1]:
            best, kept = (name, t), be
        else:
            be.close()
    if best is None:
        raise _none_started(reasons, errors)
    winner = kept or _start(best[0], artifacts, opts, reasons, errors)  # started again unless it ran last
    if winner is None:
        raise _none_started(reasons, errors)
    _write(
        path,
        {
            "choice": best[0],
            "times_s": times,
            "batch": batch,
            "key": parts,
            "load_avg_1m": load,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    _log_choice(winner, reasons, f"measured now: {_fmt(times)} per step at batch {batch}; cached in {path}")
    if load is not None and load > parts["threads"]:
        log.warning(
            "backend auto: measured while the machine was busy (load average %.1f > %d threads), so the "
            "times may not rank the backends as they run alone; measure again on a quiet machine with "
            "%s=refresh",
            load,
            parts["threads"],
            ENV_PROBE,
        )
    return winner


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not available on this platform
        return None


def measure(backend: Backend, batch: int) -> float:
    """Best-of-:data:`REPEATS` seconds of one loop step (``encode`` + ``synthesize``) at ``batch``, after
    :data:`WARMUP` untimed steps. The inputs are the artifacts' seeds broadcast to the batch. (The tests replace
    this function to inject timings.)"""
    art = backend.artifacts
    y = np.ascontiguousarray(np.broadcast_to(art.avg_feedback, (batch, *art.avg_feedback.shape)))  # [B, 3, H, W]
    w = np.ascontiguousarray(np.broadcast_to(art.latent_avg, (batch, *art.latent_avg.shape)))  # [B, S, 512]
    best = float("inf")
    for i in range(WARMUP + REPEATS):
        t0 = time.perf_counter()
        latent = backend.encode(y, y, w)
        backend.synthesize(latent)
        if i >= WARMUP:
            best = min(best, time.perf_counter() - t0)
    return best


def probe_batch(artifacts: Artifacts, asked: int | None = None) -> int:
    """The batch the probe times, clamped to the artifacts' batch profile: ``$RESTYLE_RT_AUTO_BATCH`` when set, else
    ``asked`` (the caller's batch), else 1.

    Raises:
        InputError: the variable (or ``asked``) is not a positive integer.
    """
    raw = os.environ.get(ENV_BATCH)
    what = f"${ENV_BATCH}={raw!r}"
    if raw is None:
        raw, what = ("1" if asked is None else str(asked)), f"batch {asked!r}"
    try:
        b = int(raw)
        if b < 1:
            raise ValueError
    except ValueError:
        raise InputError(f"{what}; expected a positive integer (the batch the probe times)") from None
    prof = artifacts.profile
    return max(prof.min, min(b, prof.max))


def key_parts(artifacts: Artifacts, cands: list[str], opts: dict, batch: int) -> dict:
    """Everything that can change which candidate is fastest, as a JSON-able dict (hashed by :func:`cache_path`)."""
    from .ort import default_threads

    graphs = {}  # the graph files' sha256 and their external weights' (recorded in the manifest at export)
    for g, rec in sorted(artifacts.manifest.graphs.items()):
        graphs[g] = [rec.sha256 or sha256_file(artifacts.graph_path(g)), rec.data_sha256]
    int8 = artifacts.manifest.int8.to_dict() if artifacts.manifest.int8 is not None else None  # as recorded
    return {
        "probe": PROBE_VERSION,
        "restyle_rt": __version__,  # the backends' precision rules and the tolerance table come with it
        "cpu": cpu_id(),
        "threads": int(opts.get("threads") or default_threads()),
        "graphs": graphs,
        "int8": hashlib.sha256(json.dumps(int8, sort_keys=True).encode()).hexdigest() if int8 else None,
        "versions": {c: library_version(c) for c in cands},
        "options": {k: repr(v) for k, v in sorted(opts.items()) if k != "threads"},
        "batch": int(batch),
    }


def library_version(name: str) -> str:
    """The version of the library backend ``name`` runs on (its class's ``library``, that module's
    ``__version__``); ``"missing"`` when it cannot be imported."""
    try:
        lib = backend_class(name).library
        return str(getattr(importlib.import_module(lib), "__version__", "?")) if lib else "?"
    except (BackendUnavailable, InputError, ImportError):
        return "missing"


def cache_dir() -> Path:
    """``auto-backend`` under :func:`restyle_rt.fsio.cache_root`."""
    return fsio.cache_root() / "auto-backend"


def cache_path(parts: dict) -> Path:
    """The decision file for one key."""
    return cache_dir() / (hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32] + ".json")


def _read(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("backend auto: ignoring the unreadable cached decision %s (%s); measuring again", path, e)
        return None
    return rec if isinstance(rec, dict) else None


def _write(path: Path, rec: dict) -> None:
    try:
        fsio.write_json(path, rec)
    except OSError as e:  # a read-only home must not stop the runtime: the next start measures again
        log.warning("backend auto: could not cache the decision in %s (%s)", path, e)


def _start(name: str, artifacts: Artifacts, opts: dict, reasons: list[str], errors: list[Exception]) -> Backend | None:
    """Start backend ``name`` with the options it takes; None (reason noted) when it cannot."""
    ok, why = available(name)
    if not ok:
        reasons.append(f"{name}: {why}")
        return None
    cls = backend_class(name)
    try:
        return cls(artifacts, **accepted_options(cls, opts))
    except _STARTUP_ERRORS as e:
        reasons.append(f"{name}: {e}")
        errors.append(e)
        return None


def _none_started(reasons: list[str], errors: list[Exception]) -> Exception:
    msg = "no backend can run here: " + "; ".join(reasons)
    kinds = {type(e) for e in errors}
    return kinds.pop()(msg) if len(kinds) == 1 else BackendUnavailable(msg)


def _label(be: Backend) -> str:
    prec = getattr(be, "precision", None)
    return f"{be.name} {prec}" if prec else be.name


def _fmt(times: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g} s" for k, v in sorted(times.items(), key=lambda kv: kv[1])) or "no times"


def _log_choice(be: Backend, reasons: list[str], how: str = "") -> None:
    skipped = f"; skipped {'; '.join(reasons)}" if reasons else ""
    msg = f"backend auto -> {_label(be)}" + (f" ({how})" if how else "") + skipped
    if msg not in _logged_choices:
        _logged_choices.add(msg)
        log.info("%s", msg)
