"""Engine records in ``manifest["engines"]`` and the load-time compatibility check.

A record says what an engine file is and what it runs on::

    {"graph": "encoder", "precision": "fp16", "file": "engines/encoder.fp16.engine", "sha256": "...",
     "size_bytes": 123, "trt_flavour": "tensorrt-rtx", "trt_version": "1.7.1.116",
     "compute_capabilities": ["8.6", "8.9"], "profile": [1, 1, 8], "build_seconds": 12.3,
     "strongly_typed": true, "tf32": false, "workspace_gb": 4.0, "onnx": {"file": ..., "sha256": ...},
     "source_sha256": "<sha256 of the FP32 graph it came from>", "built_at": "2026-...Z",
     "builder_flags": ["REQUIRE_USER_ALLOCATION"], "require_user_allocation": true, "io": {...},
     "layer_dtypes": {...}, "runtime_config": {...}}

``strongly_typed``, ``tf32``, ``compute_capabilities`` (RTX) and the keys of the last two lines are read back from
TensorRT's network and config objects at build time (:mod:`.settings`).

The load-time compatibility check (``check_record``, ``incompatibility``) lives in :mod:`restyle_rt.artifacts`, so
the runtime depends on the manifest layer only; it is re-exported here for the build side.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ..artifacts import (  # noqa: F401 - re-exported: the load-side check lives with the manifest
    MANIFEST, cc_str, check_record, incompatibility, write_bytes_atomic, write_manifest)

ENGINES_DIR = "engines"
PRECISIONS = ("fp32", "fp16", "int8")


def engine_file(graph: str, precision: str) -> str:
    """Path of an engine relative to the artifacts dir: ``engines/<graph>.<precision>.engine``."""
    return f"{ENGINES_DIR}/{graph}.{precision}.engine"


def fp16_onnx_file(graph: str) -> str:
    """The FP16 ONNX derived from ``<graph>.onnx`` for strongly typed builds."""
    return f"{ENGINES_DIR}/{graph}.fp16.onnx"



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



def upsert_record(root: Path, record: dict) -> dict:
    """Replace the (graph, precision) record in the manifest on disk (re-read first), save atomically."""
    manifest = json.loads((Path(root) / MANIFEST).read_text())
    engines = [r for r in manifest.get("engines", [])
               if (r.get("graph"), r.get("precision")) != (record["graph"], record["precision"])]
    engines.append(record)
    manifest["engines"] = sorted(engines, key=lambda r: (r["graph"], r["precision"]))
    write_manifest(root, manifest)
    return manifest





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
