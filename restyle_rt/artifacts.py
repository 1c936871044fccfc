"""The artifacts directory: two graphs, the loop seeds and a manifest that states the contract.

Layout::

    DIR/encoder.onnx (+ encoder.onnx.data)  synthesis.onnx (+ .data)  latent_avg.npy [S,512]
        avg_feedback.npy [3,H,W]  manifest.json
    DIR/engines/<name>.engine      (added by ``restyle-rt build``; recorded under manifest["engines"])

Writers go through :func:`staging_dir` so a failed export leaves nothing half-written; readers go through
:func:`load` which refuses a manifest or file set it does not understand, naming both sides.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .errors import ArtifactError
from .spec import GRAPHS, BatchProfile, ModelSpec

FORMAT = "restyle-rt-artifacts"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LATENT_AVG = "latent_avg.npy"
AVG_FEEDBACK = "avg_feedback.npy"


def graph_file(graph: str) -> str:
    return f"{graph}.onnx"


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def staging_dir(out: os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it atomically replaces ``out``, on error it is removed."""
    out = Path(out)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise ArtifactError(f"{out} exists and is not empty; pass overwrite=True (CLI: --force) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_manifest(directory: os.PathLike, manifest: dict) -> None:
    path = Path(directory) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


@dataclass
class Artifacts:
    """A verified artifacts directory.

    Attributes:
        root: the directory.
        manifest: the parsed ``manifest.json``.
        spec: the model spec it was exported with.
        latent_avg: [S, 512] float32, the loop's w0.
        avg_feedback: [3, H, W] float32, the loop's y0.
    """

    root: Path
    manifest: dict
    spec: ModelSpec
    latent_avg: np.ndarray
    avg_feedback: np.ndarray

    def graph_path(self, graph: str) -> Path:
        return self.root / self.manifest["graphs"][graph]["file"]

    @property
    def profile(self) -> BatchProfile:
        return BatchProfile(*self.manifest.get("batch_profile", [1, 1, 8]))

    def save_manifest(self) -> None:
        write_manifest(self.root, self.manifest)


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ArtifactError(msg)


def load(directory: os.PathLike, check_hashes: bool = False) -> Artifacts:
    """Read and verify an artifacts directory.

    Args:
        directory: the directory written by ``restyle-rt export``.
        check_hashes: also re-hash the graphs against the manifest (slow for 1024 models).

    Raises:
        ArtifactError: naming what is missing or what does not match (expected vs. found).
    """
    root = Path(directory)
    _require(root.is_dir(), f"artifacts directory {root} does not exist (make one with `restyle-rt export`)")
    mpath = root / MANIFEST
    _require(mpath.is_file(), f"{root} has no {MANIFEST}; is it an artifacts dir written by `restyle-rt export`?")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{mpath} is not valid JSON: {e}") from None
    _require(manifest.get("format") == FORMAT, f"{mpath}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    ver = manifest.get("format_version")
    _require(ver == FORMAT_VERSION, f"{mpath}: format_version {ver!r} is not understood by this runtime "
             f"(expects {FORMAT_VERSION}); re-export with this restyle-rt version")
    try:
        spec = ModelSpec.from_dict(manifest["spec"])
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{mpath}: spec is malformed ({e})") from None
    graphs = manifest.get("graphs", {})
    for g in GRAPHS:
        _require(g in graphs, f"{mpath}: graphs.{g} missing")
        for key, hkey in (("file", "sha256"), ("data_file", "data_sha256")):
            if key not in graphs[g]:
                continue
            p = root / graphs[g][key]
            _require(p.is_file(), f"{p} listed in the manifest is missing")
            if check_hashes and hkey in graphs[g]:
                got = sha256_file(p)
                _require(got == graphs[g][hkey], f"{p}: sha256 {got[:12]}… != manifest {graphs[g][hkey][:12]}…")
    lat = _load_array(root / LATENT_AVG, (spec.n_styles, 512))
    fb = _load_array(root / AVG_FEEDBACK, (3, *spec.input_hw))
    return Artifacts(root=root, manifest=manifest, spec=spec, latent_avg=lat, avg_feedback=fb)


def _load_array(path: Path, shape: tuple) -> np.ndarray:
    _require(path.is_file(), f"{path} is missing")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable .npy file: {e}") from None
    _require(a.shape == tuple(shape) and a.dtype == np.float32,
             f"{path}: expected float32 {list(shape)}, found {a.dtype} {list(a.shape)}")
    return np.ascontiguousarray(a)


def find_engine(art: Artifacts, graph: str, precision: str) -> Optional[dict]:
    """The manifest's engine record for (graph, precision), or None."""
    for rec in art.manifest.get("engines", []):
        if rec.get("graph") == graph and rec.get("precision") == precision:
            return rec
    return None
