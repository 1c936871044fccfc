"""The artifacts directory: two graphs, the loop seeds and a manifest that states the contract.

Layout::

    DIR/encoder.onnx (+ encoder.onnx.data)  synthesis.onnx (+ .data)  latent_avg.npy [S,512]
        avg_feedback.npy [3,H,W]  manifest.json
    DIR/engines/<name>.engine      (added by ``restyle-rt build``; recorded under manifest["engines"])

Writers go through :func:`staging_dir` so a failed export leaves nothing half-written; readers go through
:func:`load` which refuses a manifest or file set it does not understand, naming both sides. The manifest is read
into the frozen dataclasses of :mod:`restyle_rt.manifest` (:func:`read_manifest`), which hold its one format check.
Engines are checked against the running TensorRT / GPU by :func:`check_record` (flavour, version, compute capability,
size, hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fsio
from .errors import ArtifactError, OutputError
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, EngineRecord, Manifest  # noqa: F401 - re-exported
from .spec import GRAPHS, BatchProfile, ModelSpec

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
def staging_dir(
    out: os.PathLike,
    overwrite: bool = False,
    protect: Sequence[os.PathLike] = (),
    previous: Callable[[Path], bool] | None = None,
    what: str = "export",
) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it atomically replaces ``out``, on error it is removed.

    ``out`` is checked first by :func:`check_replaceable` (``protect`` names the inputs it must not hold;
    ``previous`` and ``what`` say what a replaceable ``out`` is, an export by default). The new directory gets
    the umask's permissions (``mkdtemp`` alone would leave it ``0o700``: unreadable to a service account reading an
    export made by CI).
    """
    out = check_replaceable(out, overwrite, protect, previous=previous, what=what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        fsio.apply_umask(tmp, 0o777)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            # move the previous export aside, put the new one in place, then delete it; Ctrl-C / SIGTERM are held
            # over the two renames, so ``out`` is never left missing, and a failed second rename puts it back
            with fsio.signals_deferred():
                os.replace(out, old / "prev")
                try:
                    os.replace(tmp, out)
                except BaseException:
                    os.replace(old / "prev", out)
                    raise
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful rename
        if old is not None and out.exists():  # (were the put-back to fail too, the previous export stays in old)
            shutil.rmtree(old, ignore_errors=True)


def is_export(directory: os.PathLike) -> bool:
    """True when ``directory`` holds a manifest written by ``restyle-rt export`` (of any format version)."""
    try:
        return json.loads((Path(directory) / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_replaceable(
    out: os.PathLike,
    overwrite: bool,
    protect: Sequence[os.PathLike] = (),
    previous: Callable[[Path], bool] | None = None,
    what: str = "export",
) -> Path:
    """Check, before any work, that the artifacts directory ``out`` may be written (and replaced).

    ``out`` may be missing or empty; with ``overwrite`` it may also be a previous export (``previous(out)`` true;
    default :func:`is_export`; ``what`` names the kind). It is never the current directory, an ancestor of it, or a
    directory holding (at any depth) or inside which lies one of ``protect``.

    Returns:
        ``out`` made absolute (so ``.`` has a name and a parent).

    Raises:
        OutputError: naming why ``out`` is refused.
    """
    if str(out) == "":
        raise OutputError("--out is empty; name the artifacts directory to write, e.g. --out artifacts/ffhq")
    path = Path(os.path.abspath(out))
    real, cwd = path.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(
            f"{out}: is the current directory or one of its parents; an export replaces its "
            "directory, so choose a new one, e.g. --out artifacts/NAME"
        )
    for p in protect:
        rp = Path(p).resolve()
        if real == rp or real in rp.parents or rp in real.parents:
            raise OutputError(f"{out}: holds (or lies inside) the input {p}; write the export elsewhere")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ArtifactError(
                f"{out} exists and is not empty; pass overwrite=True (CLI: --force) to replace a previous export"
            )
        if not (previous or is_export)(path):
            raise OutputError(
                f"{out}: is not empty and is not a previous {what}; only a previous {what} is "
                "replaced, never other files"
            )
    fsio.check_writable_dir(path.parent, "--out")
    return path


def write_manifest(directory: os.PathLike, manifest: Manifest | dict) -> None:
    """Write ``manifest.json`` atomically (temporary name + rename, fsync'ed): a :class:`Manifest` as its
    ``to_dict()``, a dict (the exporter's) as it is."""
    data = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    fsio.write_json(Path(directory) / MANIFEST, data, durable=True)


def read_manifest(directory: os.PathLike) -> Manifest:
    """The manifest of an artifacts directory, checked (:meth:`Manifest.from_dict`) but no file it names.

    Raises:
        ArtifactError: no ``manifest.json``, not JSON, or a manifest this runtime does not understand.
    """
    root = Path(directory)
    mpath = root / MANIFEST
    _require(mpath.is_file(), f"{root} has no {MANIFEST}; is it an artifacts dir written by `restyle-rt export`?")
    try:
        data = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{mpath} is not valid JSON: {e}") from None
    return Manifest.from_dict(data, where=str(mpath))


@dataclass
class Artifacts:
    """A verified artifacts directory.

    Attributes:
        root: the directory.
        manifest: the parsed ``manifest.json`` (replace it with :func:`dataclasses.replace`, then
            :meth:`save_manifest`).
        spec: the model spec it was exported with (``manifest.spec``).
        latent_avg: [S, 512] float32, the loop's w0.
        avg_feedback: [3, H, W] float32, the loop's y0.
    """

    root: Path
    manifest: Manifest
    spec: ModelSpec
    latent_avg: np.ndarray
    avg_feedback: np.ndarray

    def graph_path(self, graph: str) -> Path:
        return self.root / self.manifest.graphs[graph].file

    @property
    def profile(self) -> BatchProfile:
        return self.manifest.profile

    def save_manifest(self) -> None:
        write_manifest(self.root, self.manifest)


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ArtifactError(msg)


def load(directory: os.PathLike, check_hashes: bool = True) -> Artifacts:
    """Read and verify an artifacts directory.

    Args:
        directory: the directory written by ``restyle-rt export``.
        check_hashes: re-hash every file the manifest records a sha256 for (graphs, weight files, seeds) and
            refuse a mismatch. On by default; a verified file is remembered by (path, size, mtime, ctime, inode)
            under the cache directory (:func:`verified_cache_dir`), so a later load of the unchanged file costs
            a ``stat``. Pass False (CLI: ``--no-verify``) to skip it.

    Raises:
        ArtifactError: naming what is missing or what does not match (expected vs. found), a manifest this
            runtime does not understand (:func:`read_manifest`), or a seed holding NaN/Inf.
    """
    if isinstance(directory, bytes):
        raise ArtifactError(f"artifacts directory {directory!r} is bytes; pass a str or Path (os.fsdecode(p))")
    root = Path(directory)
    _require(root.is_dir(), f"artifacts directory {root} does not exist (make one with `restyle-rt export`)")
    manifest = read_manifest(root)
    spec = manifest.spec
    for g in GRAPHS:
        for name, sha256 in manifest.graphs[g].files():
            p = root / name
            _require(p.is_file(), f"{p} listed in the manifest is missing")
            if check_hashes and sha256 is not None:
                verify_file(p, sha256)
    if check_hashes:
        for rec in manifest.seeds.values():
            if rec.sha256 is not None:
                verify_file(root / rec.file, rec.sha256)
    lat = _load_array(root / LATENT_AVG, (spec.n_styles, 512))
    fb = _load_array(root / AVG_FEEDBACK, (3, *spec.input_hw))
    return Artifacts(root=root, manifest=manifest, spec=spec, latent_avg=lat, avg_feedback=fb)


def seed_records(root: os.PathLike) -> dict:
    """The manifest's ``seeds`` entry for the loop seeds in ``root``: file name and sha256 of each."""
    return {
        name: {"file": f, "sha256": sha256_file(Path(root) / f)}
        for name, f in (("latent_avg", LATENT_AVG), ("avg_feedback", AVG_FEEDBACK))
    }


def verified_cache_dir() -> Path:
    """Where verified hashes are remembered: ``verified`` under :func:`restyle_rt.fsio.cache_root`."""
    return fsio.cache_root() / "verified"


def _verified_key(path: Path, sha256: str) -> str:
    st = path.stat()  # ctime cannot be set by a user (unlike mtime), so an edit in place always changes the key
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}|{sha256}"
    return hashlib.sha256(ident.encode()).hexdigest()


def verify_file(path: os.PathLike, sha256: str, cache: bool = True) -> None:
    """Refuse ``path`` unless its sha256 is ``sha256``; remember a success (see :func:`load`).

    Raises:
        ArtifactError: the hash differs (the file was modified or corrupted since it was recorded).
    """
    path = Path(path)
    _require(path.is_file(), f"{path} listed in the manifest is missing")
    marker = verified_cache_dir() / _verified_key(path, sha256) if cache else None
    if marker is not None and marker.is_file():
        return
    got = sha256_file(path)
    _require(
        got == sha256,
        f"{path}: sha256 {got[:16]}… differs from the manifest's {sha256[:16]}…; the file was "
        "modified or corrupted after export. Re-export (or restore the file); --no-verify skips this check",
    )
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as e:  # an unwritable cache only costs the next load a re-hash
            logging.getLogger("restyle_rt").debug("cannot remember verified hash in %s: %s", marker.parent, e)


def _load_array(path: Path, shape: tuple) -> np.ndarray:
    _require(path.is_file(), f"{path} is missing")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable .npy file: {e}") from None
    _require(
        a.shape == tuple(shape) and a.dtype == np.float32,
        f"{path}: expected float32 {list(shape)}, found {a.dtype} {list(a.shape)}",
    )
    bad = int(np.count_nonzero(~np.isfinite(a)))
    _require(
        bad == 0,
        f"{path}: {bad} of {a.size} values are NaN or Inf; the loop would return NaN latents and "
        "black images. Re-export from the checkpoint",
    )
    return np.ascontiguousarray(a)


def find_engine(art: Artifacts, graph: str, precision: str) -> EngineRecord | None:
    """The manifest's engine record for (graph, precision), or None."""
    return art.manifest.find_engine(graph, precision)


# --- engine records: the load-time compatibility check (the build side writes them: restyle_rt.engine.records) ---


def cc_str(cc: tuple[int, int]) -> str:
    """(8, 6) -> ``"8.6"``."""
    return f"{cc[0]}.{cc[1]}"


def write_bytes_atomic(path: Path, data) -> None:
    """Engines and timing caches go through the one atomic writer (:func:`restyle_rt.fsio.write_bytes`, fsync'ed)."""
    fsio.write_bytes(path, data, durable=True)


def build_command(art_root: Path, precision: str) -> str:
    """The CLI line that rebuilds the engines of ``art_root`` (named in every refusal)."""
    return f"restyle-rt build {art_root} --precision {precision} --rebuild"


def incompatibility(record: EngineRecord, flavour: str, version: str, device_cc: tuple[int, int] | None) -> list[str]:
    """Why ``record`` cannot run with this TensorRT / GPU (empty when it can)."""
    why = []
    if record.trt_flavour != flavour:
        why.append(f"built with {record.trt_flavour!r}, this runtime is {flavour!r}")
    elif record.trt_version != version:
        why.append(f"built with {flavour} {record.trt_version}, this runtime has {flavour} {version}")
    ccs = record.compute_capabilities
    if device_cc is not None and cc_str(device_cc) not in ccs:
        why.append(
            f"built for compute capabilities {', '.join(ccs) or '(none recorded)'}, this GPU is {cc_str(device_cc)}"
        )
    return why


def check_record(
    art: Artifacts,
    graph: str,
    precision: str,
    flavour: str,
    version: str,
    device_cc: tuple[int, int] | None = None,
    verify_hash: bool = False,
) -> EngineRecord:
    """The engine record for (graph, precision), verified against this runtime.

    Raises:
        ArtifactError: no engine, missing/corrupt file, or built for another TensorRT / GPU (both sides named).
    """
    rec = find_engine(art, graph, precision)
    fix = build_command(art.root, precision)
    if rec is None:
        raise ArtifactError(
            f"{art.root} has no {graph} {precision} engine in its manifest; "
            f"build one with `{fix.replace(' --rebuild', '')}`"
        )
    path = art.root / rec.file
    if not path.is_file():
        raise ArtifactError(f"engine {path} listed in the manifest is missing; run `{fix}`")
    size = path.stat().st_size
    if rec.size_bytes not in (None, size):
        raise ArtifactError(f"engine {path}: {size} bytes on disk, manifest says {rec.size_bytes}; run `{fix}`")
    if verify_hash and rec.sha256 and sha256_file(path) != rec.sha256:
        raise ArtifactError(f"engine {path}: sha256 differs from the manifest; run `{fix}`")
    why = incompatibility(rec, flavour, version, device_cc)
    if why:
        raise ArtifactError(f"engine {path} does not match this machine: " + "; ".join(why) + f". Run `{fix}`")
    return rec


def int8_graph_path(art: Artifacts, graph: str) -> Path | None:
    """The CPU-encoding Q/DQ graph ``restyle-rt calibrate`` recorded for ``graph`` (``manifest["int8"]``), or None
    when it shipped none for that graph (it stays FP32).

    Raises:
        ArtifactError: the artifacts were never calibrated, or a recorded file is missing.
    """
    rec = art.manifest.int8
    if rec is None:
        raise ArtifactError(
            f"{art.root} has no INT8 graphs (manifest 'int8'): run `restyle-rt calibrate {art.root}` first, or use fp32"
        )
    encodings = rec.graphs.get(graph)
    if encodings is None:
        return None
    path = art.root / encodings["cpu"].file
    if not path.is_file():
        raise ArtifactError(f"{path} (INT8 {graph}, listed in the manifest) is missing; re-run `restyle-rt calibrate`")
    return path
