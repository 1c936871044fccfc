"""The artifacts manifest (``manifest.json``) as frozen dataclasses, and the one place that refuses a manifest.

:class:`Manifest` is what ``restyle-rt export`` writes (docs/architecture.md, "The graph contract"); the records
later commands add are :class:`EngineRecord` (``engines``: one per TensorRT engine, ``restyle-rt build``) and
:class:`Int8Record` (``int8``: the Q/DQ graphs and their measured accuracy, ``restyle-rt calibrate``).

* :meth:`Manifest.from_dict` is the only check of the format and its version, of the spec and of both graphs being
  listed; every typed field is checked for its JSON type. Each refusal is an :class:`~restyle_rt.errors.ArtifactError`
  naming the file and the key (``engines[0].file missing``).
* ``to_dict()`` gives back the JSON a record was read from: the same keys, in the same order, with the same values
  (``json.dumps(Manifest.from_dict(d).to_dict()) == json.dumps(d)``). Keys this version does not know are kept in
  ``extra`` and written back, so a manifest edited by a newer restyle-rt of the same format version loses nothing.
  A field that was absent stays absent while it holds its default; one set on a record built in code is written.
* What a reader only shows, hashes or passes on (the export's parity report, tool versions, the settings read back
  from TensorRT, the calibration's accuracy tables) stays plain JSON (dicts and lists), to be treated as read-only.

Records are changed with :func:`dataclasses.replace` (``replace(manifest, engines=...)``), never in place. This module
reads no file: :func:`restyle_rt.artifacts.read_manifest` and :func:`restyle_rt.artifacts.load` do.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import ArtifactError
from .spec import GRAPHS, BatchProfile, ModelSpec

FORMAT = "restyle-rt-artifacts"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

Json = Any  # a JSON value as json.loads returns it


class Where(NamedTuple):
    """Where a value sits, for messages: the file (or what stands for it) and the key path in it."""

    file: str
    path: str = ""

    def __truediv__(self, key: str) -> Where:
        return Where(self.file, f"{self.path}.{key}" if self.path else str(key))

    def at(self, index: int) -> Where:
        return Where(self.file, f"{self.path}[{index}]")

    def error(self, msg: str) -> ArtifactError:
        return ArtifactError(f"{self.file}: {self.path} {msg}" if self.path else f"{self.file}: {msg}")


def _where(where: str | Where) -> Where:
    return where if isinstance(where, Where) else Where(str(where))


# --- codecs: JSON value <-> field value ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Codec:
    decode: Callable[[Json, Where], Any]
    encode: Callable[[Any], Json]


_KINDS = {
    "a string": (str,),
    "an integer": (int,),
    "a number": (int, float),
    "a boolean": (bool,),
    "an object": (dict,),
    "an array": (list,),
}


def _kind_of(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return next((k for k, types in _KINDS.items() if isinstance(value, types)), f"a {type(value).__name__}")


def _expect(value: Json, kind: str, where: Where) -> Json:
    ok = isinstance(value, _KINDS[kind]) and (kind == "a boolean" or not isinstance(value, bool))
    if not ok:
        raise where.error(f"is {_kind_of(value)}, expected {kind}")
    return value


def _scalar(kind: str) -> _Codec:
    return _Codec(lambda v, w: _expect(v, kind, w), lambda v: v)


TEXT, INTEGER, NUMBER, BOOLEAN = (_scalar(k) for k in ("a string", "an integer", "a number", "a boolean"))
JSON = _Codec(lambda v, w: copy.deepcopy(v), copy.deepcopy)  # any JSON value, kept as it is
OBJECT = _Codec(lambda v, w: copy.deepcopy(_expect(v, "an object", w)), copy.deepcopy)


def _array(item: _Codec) -> _Codec:
    return _Codec(
        lambda v, w: tuple(item.decode(x, w.at(i)) for i, x in enumerate(_expect(v, "an array", w))),
        lambda v: [item.encode(x) for x in v],
    )


def _mapping(item: _Codec) -> _Codec:
    return _Codec(
        lambda v, w: {k: item.decode(x, w / k) for k, x in _expect(v, "an object", w).items()},
        lambda v: {k: item.encode(x) for k, x in v.items()},
    )


def _optional(codec: _Codec) -> _Codec:
    return _Codec(
        lambda v, w: None if v is None else codec.decode(v, w), lambda v: None if v is None else codec.encode(v)
    )


def _nested(cls) -> _Codec:
    return _Codec(lambda v, w: cls.from_dict(v, w), lambda v: v.to_dict())


def _profile(v: Json, where: Where) -> BatchProfile:
    _expect(v, "an array", where)
    if len(v) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise where.error(f"is {v!r}, expected [min, opt, max] batch sizes")
    try:
        return BatchProfile(*v)
    except ValueError as e:
        raise where.error(f"is malformed ({e})") from None


def _spec(v: Json, where: Where) -> ModelSpec:
    try:
        return ModelSpec.from_dict(v)
    except (KeyError, TypeError, ValueError) as e:
        raise where.error(f"is malformed ({e})") from None


PROFILE = _Codec(_profile, lambda v: v.to_list())
SPEC = _Codec(_spec, lambda v: v.to_dict())


def _field(codec: _Codec, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    """A record field read and written through ``codec``; a ``None`` default also accepts a stored ``null``."""
    if default is None:
        codec = _optional(codec)
    return field(default=default, default_factory=factory, metadata={"codec": codec})


# --- the record base ---------------------------------------------------------------------------------------------

_OWN = ("extra", "key_order")


@dataclass(frozen=True)
class Record:
    """Base of the manifest's records: typed fields, the unknown keys (``extra``) and the order keys were read in.

    Attributes:
        extra: keys this version does not know, with their JSON values (written back by ``to_dict``).
        key_order: the keys of the JSON object the record was read from, in order (empty for a record built in
            code); ``to_dict`` writes them in that order, then any other set field in declaration order.
    """

    extra: Mapping[str, Json] = field(default_factory=dict, kw_only=True, repr=False)
    key_order: tuple[str, ...] = field(default=(), kw_only=True, repr=False, compare=False)

    @classmethod
    def _data_fields(cls) -> tuple[dataclasses.Field, ...]:
        return tuple(f for f in dataclasses.fields(cls) if f.name not in _OWN)

    @classmethod
    def from_dict(cls, d: Mapping[str, Json], where: str | Where = MANIFEST):
        """Read a record from its JSON object.

        Args:
            d: the object, as ``json.loads`` returns it (not modified; nothing of it is shared with the record).
            where: the file it came from (or a :class:`Where` inside it), for messages.

        Raises:
            ArtifactError: a required key is missing, or a typed value is of the wrong JSON type.
        """
        w = _where(where)
        if not isinstance(d, dict):
            raise w.error(f"is {_kind_of(d)}, expected an object")
        kw: dict[str, Any] = {}
        for f in cls._data_fields():
            if f.name in d:
                kw[f.name] = f.metadata["codec"].decode(d[f.name], w / f.name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise (w / f.name).error("missing")
        known = {f.name for f in cls._data_fields()}
        extra = {k: copy.deepcopy(v) for k, v in d.items() if k not in known}
        return cls(**kw, extra=extra, key_order=tuple(d))

    def to_dict(self) -> dict[str, Json]:
        """The record as JSON: what :meth:`from_dict` read (see the module docstring), with any change made since."""
        fields = {f.name: f for f in self._data_fields()}
        order = list(self.key_order)
        order += [k for k in fields if k not in self.key_order]
        order += [k for k in self.extra if k not in self.key_order and k not in fields]
        out: dict[str, Json] = {}
        for k in order:
            if k in fields:
                value = getattr(self, k)
                if k not in self.key_order and _is_default(fields[k], value):
                    continue
                out[k] = fields[k].metadata["codec"].encode(value)
            elif k in self.extra:
                out[k] = copy.deepcopy(self.extra[k])
        return out


def _is_default(f: dataclasses.Field, value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


# --- records -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef(Record):
    """A file in the artifacts directory (path relative to it) and what it was recorded with: a loop seed
    (``seeds``), the ONNX an engine was built from (``onnx``)."""

    file: str = _field(TEXT)
    sha256: str | None = _field(TEXT, None)
    data_file: str | None = _field(TEXT, None)
    data_sha256: str | None = _field(TEXT, None)

    def files(self) -> tuple[tuple[str, str | None], ...]:
        """``((file, sha256), (data_file, data_sha256))``, the second only when the graph keeps external data."""
        pairs = [(self.file, self.sha256)]
        if self.data_file is not None:
            pairs.append((self.data_file, self.data_sha256))
        return tuple(pairs)


@dataclass(frozen=True)
class GraphEntry(FileRef):
    """``graphs.<graph>`` (and a ``variants`` entry): the ONNX file, its external weights, hashes and I/O."""

    bytes: int | None = _field(INTEGER, None)
    inputs: Json | None = _field(JSON, None)
    outputs: Json | None = _field(JSON, None)


@dataclass(frozen=True)
class Int8File(FileRef):
    """One Q/DQ graph of ``int8.graphs.<graph>.<encoding>`` and its node counts (``summary``)."""

    summary: Json | None = _field(OBJECT, None)


@dataclass(frozen=True)
class Source(Record):
    """``source``: the checkpoint the graphs were exported from, and the fitted fixture's record (``fit``)."""

    checkpoint: str | None = _field(TEXT, None)
    sha256: str | None = _field(TEXT, None)
    latent_avg_shape: tuple[int, ...] | None = _field(_array(INTEGER), None)
    fit: Json | None = _field(OBJECT, None)


SOURCE = _Codec(
    lambda v, w: Source.from_dict(v, w) if isinstance(v, dict) else copy.deepcopy(v),
    lambda v: v.to_dict() if isinstance(v, Source) else copy.deepcopy(v),
)


@dataclass(frozen=True)
class EngineRecord(Record):
    """One engine of ``engines``, written by ``restyle-rt build`` (:mod:`restyle_rt.engine.records`).

    ``strongly_typed``, ``tf32``, ``builder_flags``, ``optimization_profiles``, ``io``, ``layer_dtypes``,
    ``runtime_config`` and (TensorRT-RTX) ``compute_capabilities`` are read back from TensorRT's network and config
    objects at build time (:mod:`restyle_rt.engine.settings`); ``io``, ``layer_dtypes`` and ``runtime_config``
    stay JSON. ``source_sha256`` is the sha256 of the FP32 graph the engine came from.
    """

    graph: str = _field(TEXT)
    precision: str = _field(TEXT)
    file: str = _field(TEXT)
    sha256: str | None = _field(TEXT, None)
    size_bytes: int | None = _field(INTEGER, None)
    trt_flavour: str | None = _field(TEXT, None)
    trt_version: str | None = _field(TEXT, None)
    compute_capabilities: tuple[str, ...] = _field(_array(TEXT), ())
    profile: BatchProfile | None = _field(PROFILE, None)
    source_sha256: str | None = _field(TEXT, None)
    require_user_allocation: bool | None = _field(BOOLEAN, None)
    builder_flags: tuple[str, ...] = _field(_array(TEXT), ())
    strongly_typed: bool | None = _field(BOOLEAN, None)
    tf32: bool | None = _field(BOOLEAN, None)
    optimization_profiles: int | None = _field(INTEGER, None)
    io: Json | None = _field(OBJECT, None)
    layer_dtypes: Json | None = _field(OBJECT, None)
    runtime_config: Json | None = _field(OBJECT, None)
    build_seconds: float | None = _field(NUMBER, None)
    workspace_gb: float | None = _field(NUMBER, None)
    onnx: FileRef | None = _field(_nested(FileRef), None)
    built_at: str | None = _field(TEXT, None)


@dataclass(frozen=True)
class Int8Record(Record):
    """``int8``, written by ``restyle-rt calibrate`` (:mod:`restyle_rt.calibration.pipeline`).

    ``graphs`` maps each shipped graph to its encodings (``cpu``: ONNX Runtime / OpenVINO, ``trt``: TensorRT explicit
    quantization); a graph not shipped is named in ``not_shipped``. ``accuracy`` holds, per loop configuration
    (``encoder``, ``encoder+synthesis``, ...) and encoding, one row per loop step (``step``, ``latent_rel_l2``,
    ``image_psnr_db`` (None: identical), ...); ``meets_ship_bar`` says per graph whether every step met
    ``ship_bar``, and ``measured_on`` on which CPU. Everything but ``graphs`` and the texts stays JSON.
    """

    tool: str | None = _field(TEXT, None)
    method: str | None = _field(TEXT, None)
    op_types: tuple[str, ...] = _field(_array(TEXT), ())
    data: Json | None = _field(OBJECT, None)
    keep_rule: str | None = _field(TEXT, None)
    ship_bar: Json | None = _field(OBJECT, None)
    encodings: Json | None = _field(OBJECT, None)
    graphs: Mapping[str, Mapping[str, Int8File]] = _field(_mapping(_mapping(_nested(Int8File))), factory=dict)
    kept_layers: Json = _field(OBJECT, factory=dict)
    sensitivity: Json = _field(OBJECT, factory=dict)
    keep_curve: Json = _field(OBJECT, factory=dict)
    accuracy: Json = _field(OBJECT, factory=dict)
    not_shipped: Json = _field(OBJECT, factory=dict)
    meets_ship_bar: Json = _field(OBJECT, factory=dict)
    measured_on: Json | None = _field(OBJECT, None)
    seconds: float | None = _field(NUMBER, None)


@dataclass(frozen=True)
class Manifest(Record):
    """``manifest.json`` (docs/architecture.md, "The graph contract").

    ``source`` is a :class:`Source`, or the JSON value as stored when it is not an object. ``parity``,
    ``versions``, ``modconv`` and ``variants`` stay JSON. ``graphs`` always holds ``encoder`` and ``synthesis``.
    """

    format: str = _field(TEXT)
    format_version: int = _field(INTEGER)
    spec: ModelSpec = _field(SPEC)
    source: Source | Json | None = _field(SOURCE, None)
    precision: str | None = _field(TEXT, None)
    opset: int | None = _field(INTEGER, None)
    batch_profile: BatchProfile | None = _field(PROFILE, None)
    graphs: Mapping[str, GraphEntry] = _field(_mapping(_nested(GraphEntry)), factory=dict)
    seeds: Mapping[str, FileRef] = _field(_mapping(_nested(FileRef)), factory=dict)
    parity: Json | None = _field(JSON, None)
    versions: Json | None = _field(JSON, None)
    export_seconds: float | None = _field(NUMBER, None)
    modconv: Json | None = _field(JSON, None)
    variants: Json | None = _field(JSON, None)
    engines: tuple[EngineRecord, ...] = _field(_array(_nested(EngineRecord)), ())
    int8: Int8Record | None = _field(_nested(Int8Record), None)

    @classmethod
    def from_dict(cls, d: Mapping[str, Json], where: str | Where = MANIFEST) -> Manifest:
        """Read a manifest, refusing one this runtime does not understand.

        Args:
            d: the parsed ``manifest.json``.
            where: the file, named in every refusal (``restyle_rt.artifacts.read_manifest`` passes its path).

        Raises:
            ArtifactError: not an object, another format or format version, a malformed spec, a graph not
                listed, a missing required key or a value of the wrong JSON type (each naming the key).
        """
        w = _where(where)
        if not isinstance(d, dict):
            raise ArtifactError(f"{w.file}: expected a JSON object, found {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ArtifactError(f"{w.file}: format is {d.get('format')!r}, expected {FORMAT!r}")
        ver = d.get("format_version")
        if ver != FORMAT_VERSION:
            raise ArtifactError(
                f"{w.file}: format_version {ver!r} is not understood by this runtime "
                f"(expects {FORMAT_VERSION}); re-export with this restyle-rt version"
            )
        if "spec" not in d:  # as a malformed spec, as ever
            raise (w / "spec").error(f"is malformed ({KeyError('spec')})")
        manifest = super().from_dict(d, w)
        for g in GRAPHS:
            if g not in manifest.graphs:
                raise (w / "graphs" / g).error("missing")
        return manifest

    @property
    def profile(self) -> BatchProfile:
        """The batch profile the graphs were exported for (1/1/8 when none is recorded)."""
        return self.batch_profile or BatchProfile(1, 1, 8)

    def find_engine(self, graph: str, precision: str) -> EngineRecord | None:
        """The engine record for (graph, precision), or None."""
        return next((r for r in self.engines if (r.graph, r.precision) == (graph, precision)), None)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "EngineRecord",
    "FileRef",
    "GraphEntry",
    "Int8File",
    "Int8Record",
    "Manifest",
    "Record",
    "Source",
    "Where",
]
