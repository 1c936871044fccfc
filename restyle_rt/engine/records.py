"""Engine records in ``manifest["engines"]`` and the load-time compatibility check.

A record says what an engine file is and what it runs on::

    {"graph": "encoder", "precision": "fp16", "file": "engines/encoder.fp16.engine", "sha256": "...",
     "size_bytes": 123, "trt_flavour": "tensorrt-rtx", "trt_version": "1.7.1.116",
     "compute_capabilities": ["8.6", "8.9"], "profile": [1, 1, 8], "build_seconds": 12.3,
     "strongly_typed": true, "tf32": false, "workspace_gb": 4.0, "onnx": {"file": ..., "sha256": ...},
     "source_sha256": "<sha256 of the FP32 graph it came from>", "built_at": "2026-...Z"}

At load an engine is refused (``ArtifactError``) when its flavour, version or target compute capabilities do not
match the running TensorRT / GPU; the message names both sides and the ``restyle-rt build ... --rebuild`` fix.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ..artifacts import MANIFEST, Artifacts, find_engine, sha256_file, write_manifest
from ..errors import ArtifactError

ENGINES_DIR = "engines"
PRECISIONS = ("fp32", "fp16", "int8")


def engine_file(graph: str, precision: str) -> str:
    """Path of an engine relative to the artifacts dir: ``engines/<graph>.<precision>.engine``."""
    return f"{ENGINES_DIR}/{graph}.{precision}.engine"


def fp16_onnx_file(graph: str) -> str:
    """The FP16 ONNX derived from ``<graph>.onnx`` for strongly typed builds."""
    return f"{ENGINES_DIR}/{graph}.fp16.onnx"


def cc_str(cc: Tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def parse_cc(text: str) -> Tuple[int, int]:
    """``"8.6"`` / ``"86"`` / ``"sm_86"`` -> (8, 6)."""
    t = text.strip().lower().replace("sm_", "").replace("sm", "")
    if "." in t:
        major, minor = t.split(".", 1)
    elif t.isdigit() and len(t) >= 2:
        major, minor = t[:-1], t[-1]
    else:
        raise ValueError(f"compute capability {text!r}: expected MAJOR.MINOR, e.g. 8.6")
    return int(major), int(minor)


def write_bytes_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def upsert_record(root: Path, record: dict) -> dict:
    """Replace the (graph, precision) record in the manifest on disk (re-read first), save atomically."""
    manifest = json.loads((Path(root) / MANIFEST).read_text())
    engines = [r for r in manifest.get("engines", [])
               if (r.get("graph"), r.get("precision")) != (record["graph"], record["precision"])]
    engines.append(record)
    manifest["engines"] = sorted(engines, key=lambda r: (r["graph"], r["precision"]))
    write_manifest(root, manifest)
    return manifest


def build_command(art_root: Path, precision: str) -> str:
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


def is_current(root: Path, record: Optional[dict], want: dict) -> bool:
    """Whether an existing record already satisfies a build request ``want`` (same keys compared)."""
    if not record or not (Path(root) / record["file"]).is_file():
        return False
    if (Path(root) / record["file"]).stat().st_size != record.get("size_bytes"):
        return False
    return all(record.get(k) == v for k, v in want.items())


def cc_list(items: Iterable[str]) -> List[str]:
    return [cc_str(parse_cc(s)) for s in items]


def summarize(records: Sequence[dict]) -> List[str]:
    """One human line per record (CLI output, logs)."""
    return [f"{r['graph']:9s} {r['precision']}  {r['size_bytes'] / 2**20:8.1f} MiB  {r['build_seconds']:7.1f} s  "
            f"{r['trt_flavour']} {r['trt_version']}  cc {','.join(r['compute_capabilities'])}  -> {r['file']}"
            for r in records]
