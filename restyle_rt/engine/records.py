"""Engine records in ``manifest["engines"]`` (:class:`restyle_rt.manifest.EngineRecord`) and the load-time
compatibility check.

A record says what an engine file is and what it runs on (its JSON)::

    {"graph": "encoder", "precision": "fp16", "file": "engines/encoder.fp16.engine", "sha256": "...",
     "size_bytes": 123, "trt_flavour": "tensorrt-rtx", "trt_version": "1.7.1.116",
     "compute_capabilities": ["8.6", "8.9"], "profile": [1, 1, 8], "build_seconds": 12.3,
     "strongly_typed": true, "tf32": false, "workspace_gb": 4.0, "onnx": {"file": ..., "sha256": ...},
     "source_sha256": "<sha256 of the FP32 graph it came from>", "built_at": "2026-...Z",
     "builder_flags": ["REQUIRE_USER_ALLOCATION"], "require_user_allocation": true, "io": {...},
     "layer_dtypes": {...}, "runtime_config": {...}}

``strongly_typed``, ``tf32``, ``compute_capabilities`` (RTX) and the keys of the last two lines are read back from
TensorRT's network and config objects at build time (:mod:`.settings`). A record is kept, not rebuilt, while it
matches the build request (:class:`BuildRequest`, :func:`is_current`).

The load-time compatibility check (``check_record``, ``incompatibility``) lives in :mod:`restyle_rt.artifacts`, so
the runtime depends on the manifest layer only; it is re-exported here for the build side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import (  # noqa: F401 - re-exported: the load-side check lives with the manifest
    MANIFEST,
    cc_str,
    check_record,
    incompatibility,
    read_manifest,
    write_bytes_atomic,
    write_manifest,
)
from ..manifest import EngineRecord, Manifest
from ..spec import BatchProfile

ENGINES_DIR = "engines"
PRECISIONS = ("fp32", "fp16", "int8")


def engine_file(graph: str, precision: str) -> str:
    """Path of an engine relative to the artifacts dir: ``engines/<graph>.<precision>.engine``."""
    return f"{ENGINES_DIR}/{graph}.{precision}.engine"


def fp16_onnx_file(graph: str) -> str:
    """The FP16 ONNX derived from ``<graph>.onnx`` for strongly typed builds."""
    return f"{ENGINES_DIR}/{graph}.fp16.onnx"


def parse_cc(text: str) -> tuple[int, int]:
    """``"8.6"`` / ``"86"`` / ``"sm_86"`` -> (8, 6)."""
    t = text.strip().lower().replace("sm_", "").replace("sm", "")
    if "." in t:
        major, minor = t.split(".", 1)
    elif t.isdigit() and len(t) >= 2:
        major, minor = t[:-1], t[-1]
    else:
        raise ValueError(f"compute capability {text!r}: expected MAJOR.MINOR, e.g. 8.6")
    return int(major), int(minor)


def upsert_record(root: Path, record: EngineRecord) -> Manifest:
    """Replace the (graph, precision) record in the manifest on disk (re-read first), save atomically.

    Returns:
        The manifest as written.
    """
    manifest = read_manifest(root)
    key = (record.graph, record.precision)
    engines = [r for r in manifest.engines if (r.graph, r.precision) != key] + [record]
    manifest = dataclasses.replace(manifest, engines=tuple(sorted(engines, key=lambda r: (r.graph, r.precision))))
    write_manifest(root, manifest)
    return manifest


@dataclass(frozen=True)
class BuildRequest:
    """What a build of one graph asks for; an existing engine record is current when it has every field equal.

    Its fields are :class:`~restyle_rt.manifest.EngineRecord` fields, written into the new record (before the
    settings read back from TensorRT, which win).
    """

    trt_flavour: str
    trt_version: str
    compute_capabilities: tuple[str, ...]
    profile: BatchProfile
    source_sha256: str
    require_user_allocation: bool

    def to_dict(self) -> dict:
        """As the record's JSON keys and values."""
        return {
            "trt_flavour": self.trt_flavour,
            "trt_version": self.trt_version,
            "compute_capabilities": list(self.compute_capabilities),
            "profile": self.profile.to_list(),
            "source_sha256": self.source_sha256,
            "require_user_allocation": self.require_user_allocation,
        }


def is_current(root: Path, record: EngineRecord | None, want: BuildRequest) -> bool:
    """Whether an existing record already satisfies the build request ``want``: its engine file is there with the
    recorded size, and every field of ``want`` equals the record's."""
    if record is None or not (Path(root) / record.file).is_file():
        return False
    if (Path(root) / record.file).stat().st_size != record.size_bytes:
        return False
    return all(getattr(record, f.name) == getattr(want, f.name) for f in dataclasses.fields(want))


def cc_list(items: Iterable[str]) -> list[str]:
    return [cc_str(parse_cc(s)) for s in items]


def summarize(records: Sequence[EngineRecord]) -> list[str]:
    """One human line per record (CLI output, logs)."""
    return [
        f"{r.graph:9s} {r.precision}  {r.size_bytes / 2**20:8.1f} MiB  {r.build_seconds:7.1f} s  "
        f"{r.trt_flavour} {r.trt_version}  cc {','.join(r.compute_capabilities)}  -> {r.file}"
        for r in records
    ]
