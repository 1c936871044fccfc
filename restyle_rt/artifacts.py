"""The artifacts directory: two graphs, the loop seeds and a manifest that states the contract.

Layout::

    DIR/encoder.onnx (+ encoder.onnx.data)  synthesis.onnx (+ .data)  latent_avg.npy [S,512]
        avg_feedback.npy [3,H,W]  manifest.json
    DIR/engines/<name>.engine      (added by ``restyle-rt build``; recorded under manifest["engines"])

Writers go through :func:`staging_dir` so a failed export leaves nothing half-written; readers go through
:func:`load` which refuses a manifest or file set it does not understand, naming both sides. Engines are checked
against the running TensorRT / GPU by :func:`check_record` (flavour, version, compute capability, size, hash).
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
from typing import Iterator, List, Optional, Tuple

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


# --- engine records: the load-time compatibility check (the build side writes them: restyle_rt.engine.records) ---

def cc_str(cc: Tuple[int, int]) -> str:
    """(8, 6) -> ``"8.6"``."""
    return f"{cc[0]}.{cc[1]}"


def write_bytes_atomic(path: Path, data) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_command(art_root: Path, precision: str) -> str:
    """The CLI line that rebuilds the engines of ``art_root`` (named in every refusal)."""
    return f"restyle-rt build {art_root} --precision {precision} --rebuild"


def incompatibility(record: dict, flavour: str, version: str, device_cc: Optional[Tuple[int, int]]) -> List[str]:
    """Why ``record`` cannot run with this TensorRT / GPU (empty when it can)."""
    why = []
    if record.get("trt_flavour") != flavour:
        why.append(f"built with {record.get('trt_flavour')!r}, this runtime is {flavour!r}")
    elif record.get("trt_version") != version:
        why.append(f"built with {flavour} {record.get('trt_version')}, this runtime has {flavour} {version}")
    ccs = record.get("compute_capabilities") or []
    if device_cc is not None and cc_str(device_cc) not in ccs:
        why.append(f"built for compute capabilities {', '.join(ccs) or '(none recorded)'}, "
                   f"this GPU is {cc_str(device_cc)}")
    return why


def check_record(art: Artifacts, graph: str, precision: str, flavour: str, version: str,
                 device_cc: Optional[Tuple[int, int]] = None, verify_hash: bool = False) -> dict:
    """The engine record for (graph, precision), verified against this runtime.

    Raises:
        ArtifactError: no engine, missing/corrupt file, or built for another TensorRT / GPU (both sides named).
    """
    rec = find_engine(art, graph, precision)
    fix = build_command(art.root, precision)
    if rec is None:
        raise ArtifactError(f"{art.root} has no {graph} {precision} engine in its manifest; "
                            f"build one with `{fix.replace(' --rebuild', '')}`")
    path = art.root / rec["file"]
    if not path.is_file():
        raise ArtifactError(f"engine {path} listed in the manifest is missing; run `{fix}`")
    size = path.stat().st_size
    if rec.get("size_bytes") not in (None, size):
        raise ArtifactError(f"engine {path}: {size} bytes on disk, manifest says {rec['size_bytes']}; run `{fix}`")
    if verify_hash and rec.get("sha256") and sha256_file(path) != rec["sha256"]:
        raise ArtifactError(f"engine {path}: sha256 differs from the manifest; run `{fix}`")
    why = incompatibility(rec, flavour, version, device_cc)
    if why:
        raise ArtifactError(f"engine {path} does not match this machine: " + "; ".join(why) + f". Run `{fix}`")
    return rec
