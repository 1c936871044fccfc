"""Benchmark presets: random-weight models of the official architectures, built and exported on first use.

A preset is one of :data:`restyle_rt.export.fixtures.PRESETS` (``ffhq-1024``, ``cars-512``,
``church-256``). On first use a random-weight checkpoint is written with
:func:`~restyle_rt.export.fixtures.make_checkpoint` and exported with
:func:`~restyle_rt.export.onnx.export_artifacts`; both are cached under
``presets/<name>`` under :func:`restyle_rt.fsio.cache_root` (``$RESTYLE_RT_CACHE``, else
``$XDG_CACHE_HOME/restyle-rt``, else ``~/.cache/restyle-rt``)::

    <name>/checkpoint.pt      the official-format checkpoint (the torch baselines load it)
    <name>/artifacts/         the exported artifacts directory (the runtime backends load it)

The weights are meaningless; only the shapes and the compute matter. Building ffhq-1024 takes several
minutes and about 10 GB of peak memory; church-256 about a minute.

``fitted=True`` (``bench --fitted``) caches under ``presets/<name>-fitted`` the same checkpoint with its encoder
*fitted* to its own generator (:mod:`restyle_rt.export.fit`: its loop converges, so accuracy can be measured
against known answers). Only presets whose encoder has no feature pyramid and a 256x256 input can be fitted
(``ffhq-1024``, ``church-256``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .. import fsio
from ..errors import InputError

log = logging.getLogger("restyle_rt")

# Kept in step with restyle_rt.export.fixtures.PRESETS (which imports torch; this module must not).
PRESET_NAMES = ("ffhq-1024", "cars-512", "church-256")
FITTABLE = ("ffhq-1024", "church-256")  # no feature pyramid, 256x256 encoder input (restyle_rt.export.fit.SUPPORTED)
PRESET_SEED = 0
CHECKPOINT = "checkpoint.pt"
ARTIFACTS = "artifacts"


def check_preset(name: str) -> str:
    """Return ``name`` if it is a known preset.

    Raises:
        InputError: unknown preset, naming the known ones.
    """
    if name not in PRESET_NAMES:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return name


def preset_dir(name: str, fitted: bool = False) -> Path:
    """The cache directory of preset ``name`` (not created)."""
    check_preset(name)
    if fitted and name not in FITTABLE:
        raise InputError(
            f"preset {name!r} cannot be fitted (an encoder without a feature pyramid at 256x256 input is needed); "
            f"fittable: {', '.join(FITTABLE)}"
        )
    return fsio.cache_root() / "presets" / (f"{name}-fitted" if fitted else name)


def ensure_preset(name: str, progress: bool = True, fitted: bool = False) -> tuple[Path, Path]:
    """Build (once) and return the preset's (checkpoint path, artifacts dir).

    Args:
        name: a preset name from :data:`PRESET_NAMES`.
        progress: show the exporter's progress bar.
        fitted: the checkpoint with its encoder fitted to its generator (:data:`FITTABLE` presets; the fit
            takes minutes to tens of minutes on 2 cores, once).

    Returns:
        (checkpoint .pt, artifacts directory).

    Raises:
        InputError: unknown preset.
        BackendUnavailable: torch (the ``export`` extra) is missing and the preset is not cached yet.
    """
    root = preset_dir(name, fitted)
    ckpt, art = root / CHECKPOINT, root / ARTIFACTS
    if ckpt.is_file() and (art / "manifest.json").is_file():
        log.debug("preset %s cached at %s", name, root)
        return ckpt, art
    try:
        from ..export.fixtures import PRESETS, make_checkpoint
        from ..export.onnx import export_artifacts
    except ImportError as e:
        from ..errors import BackendUnavailable

        raise BackendUnavailable(
            f"building preset {name!r} needs {e.name or e}; pip install 'restyle-rt[export]' "
            f"(torch==2.13.0 on CPU boxes)"
        ) from None
    root.mkdir(parents=True, exist_ok=True)
    encoder_type, dataset_type, size = PRESETS[name]
    if not ckpt.is_file():
        t0 = time.perf_counter()
        log.info(
            "preset %s: making a random-weight %s @ %d checkpoint (first use; cached in %s)",
            name,
            encoder_type,
            size,
            root,
        )
        if fitted:
            from ..export.fit import PRESET_FIT, fit_encoder

            base = preset_dir(name) / CHECKPOINT  # the fit needs the random checkpoint, not its export
            if not base.is_file():
                base.parent.mkdir(parents=True, exist_ok=True)
                make_checkpoint(base, encoder_type, dataset_type, size, seed=PRESET_SEED)
            log.info("preset %s: fitting its encoder to its generator (first use: minutes)", name)
            rep = fit_encoder(
                base, ckpt, seed=PRESET_SEED, progress=progress, **PRESET_FIT.get(name, {})
            )  # written atomically
            log.info("preset %s: fitted in %.0f s (%s)", name, rep["time_s"], rep["config"]["method"])
        else:
            make_checkpoint(ckpt, encoder_type, dataset_type, size, seed=PRESET_SEED)  # written atomically
        log.info("preset %s: checkpoint written in %.1f s", name, time.perf_counter() - t0)
    if not (art / "manifest.json").is_file():
        t0 = time.perf_counter()
        log.info("preset %s: exporting to ONNX (slow: minutes at 1024, ~10 GB peak memory)", name)
        export_artifacts(ckpt, art, overwrite=True, progress=progress)
        log.info("preset %s: exported in %.1f s", name, time.perf_counter() - t0)
    return ckpt, art
