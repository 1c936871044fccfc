"""Random-weight ReStyle models for tests: official-format checkpoints and exported artifacts, built once.

Everything is cached under ``$RESTYLE_RT_TEST_CACHE`` (default ``<repo>/.cache/test-models``, git-ignored) keyed by
the config name and a hash of the exporter sources, so several test modules (and reruns) share one export.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("RESTYLE_RT_TEST_CACHE", ROOT / ".cache" / "test-models"))

# name: (encoder_type, dataset_type, output_size, latent_avg_shape)
CONFIGS = {
    "psp-irse50-ffhq": ("BackboneEncoder", "ffhq_encode", 32, "SxD"),
    "e4e-irse50-ffhq": ("ProgressiveBackboneEncoder", "ffhq_encode", 32, "D"),
    "psp-resnet34-church": ("ResNetBackboneEncoder", "church_encode", 16, "D"),
    "e4e-resnet34-cars": ("ResNetProgressiveBackboneEncoder", "cars_encode", 32, "SxD"),
    # pSp's FPN encoders: 32 px gives S = 8, so all three pyramid levels (heads 0-2, 3-6, 7) are used
    "psp-fpn-irse50-ffhq": ("GradualStyleEncoder", "ffhq_encode", 32, "SxD"),
    "psp-fpn-resnet34-cars": ("ResNetGradualStyleEncoder", "cars_encode", 32, "D"),
}
# the configs that are exported to ONNX in CI (export is the slow part): IR-SE50 + pSp, ResNet34 + e4e + cars,
# the ResNet34 FPN + cars
EXPORTED = ("psp-irse50-ffhq", "e4e-resnet34-cars", "psp-fpn-resnet34-cars")


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "restyle_rt" / "export").rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


def checkpoint_path(name: str) -> Path:
    """Path of the cached random-weight checkpoint ``name`` (made on first use)."""
    from restyle_rt.export.fixtures import make_checkpoint

    et, dt, size, la = CONFIGS[name]
    path = CACHE / f"{name}-{_source_hash()}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        make_checkpoint(tmp, et, dt, size, seed=sum(map(ord, name)), latent_avg_shape=la)
        os.replace(tmp, path)
    return path


def fitted_checkpoint_path(name: str = "psp-resnet34-church", seed: int = 0) -> Path:
    """Path of the cached *fitted* checkpoint made from ``name`` (:func:`restyle_rt.export.fit.fit_encoder`, whose
    loop converges; ResNet34 configs only), made on first use."""
    from restyle_rt.export.fit import fit_encoder

    path = CACHE / f"{name}-fitted{seed}-{_source_hash()}.pt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        fit_encoder(checkpoint_path(name), tmp, seed=seed)
        os.replace(tmp, path)
    return path


def fitted_artifacts_path(name: str = "psp-resnet34-church", seed: int = 0) -> Path:
    """Path of the cached artifacts exported from :func:`fitted_checkpoint_path` (made on first use)."""
    from restyle_rt.export import export_artifacts

    out = CACHE / f"{name}-fitted{seed}-{_source_hash()}-artifacts"
    if not (out / "manifest.json").exists():
        export_artifacts(fitted_checkpoint_path(name, seed), out, max_batch=4, overwrite=True, progress=False)
    return out


def artifacts_path(name: str) -> Path:
    """Path of the cached artifacts dir exported from checkpoint ``name`` (made on first use)."""
    from restyle_rt.export import export_artifacts

    out = CACHE / f"{name}-{_source_hash()}-artifacts"
    if not (out / "manifest.json").exists():
        export_artifacts(checkpoint_path(name), out, max_batch=4, overwrite=True, progress=False)
    return out


def require(module: str):
    return pytest.importorskip(module, reason=f"{module} not installed")
