"""The manifest as frozen dataclasses (restyle_rt/manifest.py): exact round trips, the one format/version refusal,
typed errors naming the key, unknown keys kept, and the typed manifest behind ``artifacts.load``.

Round trips on exported artifacts (the model fixtures and a fresh export) are in tests/parity/test_manifest_exports.py;
on real engine and INT8 records in tests/trt/test_engine_build.py and tests/calibration/test_calibration.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from restyle_rt import artifacts
from restyle_rt.errors import ArtifactError
from restyle_rt.manifest import FORMAT, FORMAT_VERSION, EngineRecord, FileRef, GraphEntry, Int8Record, Manifest, Source
from restyle_rt.spec import BatchProfile, ModelSpec

pytestmark = pytest.mark.unit

SPEC = {
    "n_styles": 4,
    "output_size": 16,
    "input_hw": [16, 16],
    "image_hw": [16, 16],
    "encoder_type": "BackboneEncoder",
    "dataset_type": "ffhq_encode",
}
IO = {
    "inputs": [{"name": "latent", "shape": ["batch", 4, 512], "dtype": "float32"}],
    "outputs": [{"name": "image", "shape": ["batch", 3, 16, 16], "dtype": "float32"}],
}


def _engine(graph: str, precision: str) -> dict:
    """An engine record in the key order ``restyle-rt build`` writes (engine/builder.py)."""
    return {
        "graph": graph,
        "precision": precision,
        "file": f"engines/{graph}.{precision}.engine",
        "sha256": "e" * 64,
        "size_bytes": 1234,
        "trt_flavour": "tensorrt-rtx",
        "trt_version": "1.7.1.116",
        "compute_capabilities": ["8.6", "8.9"],
        "profile": [1, 1, 8],
        "source_sha256": "s" * 64,
        "require_user_allocation": True,
        "builder_flags": ["REQUIRE_USER_ALLOCATION", "TF32"],
        "strongly_typed": True,
        "tf32": True,
        "optimization_profiles": 1,
        "io": {
            "latent": {
                "mode": "input",
                "dtype": "float32",
                "shape": [-1, 4, 512],
                "profile": [[1, 4, 512], [1, 4, 512], [8, 4, 512]],
            }
        },
        "layer_dtypes": {"float16": 10, "float32": 3},
        "runtime_config": {"execution_context_allocation": "user_managed", "stream_capture": True},
        "build_seconds": 12.34,
        "workspace_gb": 4.0,
        "onnx": {"file": f"engines/{graph}.fp16.onnx", "sha256": "o" * 64},
        "built_at": "2026-01-02T03:04:05Z",
    }


def _int8() -> dict:
    """An INT8 record in the key order ``restyle-rt calibrate`` writes (calibration/pipeline.py)."""
    rows = [
        {"step": 1, "latent_rel_l2": 0.01, "image_rel_l2": 0.02, "image_psnr_db": 38.5},
        {"step": 2, "latent_rel_l2": 0.012, "image_rel_l2": 0.021, "image_psnr_db": None},
    ]
    return {
        "tool": "onnxruntime.quantization 1.32.0",
        "method": "entropy (KL, 2048 bins, 128 quantized bins)",
        "op_types": ["Conv", "Gemm"],
        "data": {
            "source": "generated:6",
            "count": 6,
            "held_out": 3,
            "loop_steps": 3,
            "loop_aware": True,
            "feeds_per_graph": 18,
        },
        "keep_rule": "explicit kept layers",
        "ship_bar": {"latent_rel_l2": 0.05, "image_psnr_db": 28.0, "rule": "every step"},
        "encodings": {"cpu": "U8", "trt": "S8"},
        "graphs": {
            "encoder": {
                "cpu": {
                    "file": "int8/encoder.cpu.onnx",
                    "sha256": "c" * 64,
                    "summary": {"QuantizeLinear": 7, "DequantizeLinear": 9},
                },
                "trt": {
                    "file": "int8/encoder.trt.onnx",
                    "sha256": "t" * 64,
                    "summary": {"QuantizeLinear": 7, "DequantizeLinear": 8},
                },
            }
        },
        "kept_layers": {"encoder": ["/conv1/Conv"]},
        "sensitivity": {"encoder": {"layers": None, "top": []}},
        "keep_curve": {},
        "accuracy": {"encoder": {"cpu": rows, "trt": rows}},
        "not_shipped": {"synthesis": "misses the ship bar"},
        "meets_ship_bar": {"encoder": True},
        "measured_on": {"cpu": "Some CPU", "cpu_id": "0" * 32, "onnxruntime": "1.32.0"},
        "seconds": 41.5,
    }


def _manifest(**over) -> dict:
    """A manifest in the key order ``restyle-rt export`` writes (export/onnx.py), with engines and INT8 added."""
    graphs = {
        g: {
            "file": f"{g}.onnx",
            "sha256": "a" * 64,
            "data_file": f"{g}.onnx.data",
            "data_sha256": "b" * 64,
            "bytes": 4096,
            **IO,
        }
        for g in ("encoder", "synthesis")
    }
    m = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": SPEC,
        "source": {"checkpoint": "x.pt", "sha256": "d" * 64, "latent_avg_shape": [512], "fit": None},
        "precision": "fp32",
        "opset": 17,
        "batch_profile": [1, 1, 8],
        "graphs": graphs,
        "seeds": {
            "latent_avg": {"file": "latent_avg.npy", "sha256": "1" * 64},
            "avg_feedback": {"file": "avg_feedback.npy", "sha256": "2" * 64},
        },
        "parity": {"encoder": {"ort": {"latent_next": {"rel_l2": 1e-7, "psnr_db": float("inf")}}}, "inputs": {}},
        "versions": {"restyle_rt": "0.1.0", "onnxslim": None},
        "export_seconds": 21.86,
        "modconv": {"default": "portable", "why": "not measured"},
        "variants": {
            "synthesis.plugin": {"file": "synthesis.plugin.onnx", "sha256": "f" * 64, "graph": "synthesis", "nodes": 12}
        },
        "engines": [_engine("encoder", "fp16"), _engine("synthesis", "fp16")],
        "int8": _int8(),
    }
    m.update(over)
    return m


def _text(d) -> str:
    return json.dumps(d, indent=2)


def test_round_trip_is_exact_keys_order_and_values():
    d = _manifest()
    before = copy.deepcopy(d)
    m = Manifest.from_dict(d)
    assert _text(m.to_dict()) == _text(d)  # same text: keys, their order, values (an inf too)
    assert d == before  # the input is not modified ...
    m.engines[0].io["latent"]["mode"] = "changed"
    assert d == before  # ... nor shared with the record
    assert _text(EngineRecord.from_dict(_engine("encoder", "fp32")).to_dict()) == _text(_engine("encoder", "fp32"))
    assert _text(Int8Record.from_dict(_int8()).to_dict()) == _text(_int8())


def test_typed_fields():
    m = Manifest.from_dict(_manifest())
    assert m.spec == ModelSpec.from_dict(SPEC) and m.profile == BatchProfile(1, 1, 8)
    assert isinstance(m.source, Source) and m.source.sha256 == "d" * 64 and m.source.fit is None
    g = m.graphs["synthesis"]
    assert isinstance(g, GraphEntry) and g.files() == (("synthesis.onnx", "a" * 64), ("synthesis.onnx.data", "b" * 64))
    assert m.seeds["latent_avg"] == FileRef("latent_avg.npy", "1" * 64)
    e = m.find_engine("synthesis", "fp16")
    assert e is m.engines[1] and m.find_engine("synthesis", "fp32") is None
    assert e.compute_capabilities == ("8.6", "8.9") and e.profile == BatchProfile(1, 1, 8)
    assert e.onnx.file == "engines/synthesis.fp16.onnx" and e.require_user_allocation is True
    i8 = m.int8
    assert i8.graphs["encoder"]["trt"].file == "int8/encoder.trt.onnx"
    assert i8.graphs["encoder"]["cpu"].summary == {"QuantizeLinear": 7, "DequantizeLinear": 9}
    assert i8.meets_ship_bar == {"encoder": True} and i8.op_types == ("Conv", "Gemm")


def test_records_are_frozen():
    m = Manifest.from_dict(_manifest())
    for obj, name in ((m, "precision"), (m.engines[0], "file"), (m.int8, "seconds"), (m.graphs["encoder"], "file")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)


def test_unknown_keys_are_kept_in_place():
    d = _manifest(newer={"what": 1})
    d["graphs"]["encoder"] = {"future": True, **d["graphs"]["encoder"]}
    d["engines"][0]["plugin"] = ["x"]
    d["int8"]["graphs"]["encoder"]["cpu"]["note"] = "n"
    d["source"]["origin"] = "hub"
    m = Manifest.from_dict(d)
    assert m.extra == {"newer": {"what": 1}} and m.graphs["encoder"].extra == {"future": True}
    assert m.engines[0].extra == {"plugin": ["x"]} and m.source.extra == {"origin": "hub"}
    assert _text(m.to_dict()) == _text(d)
    changed = dataclasses.replace(m, precision="fp16").to_dict()
    assert list(changed) == list(d) and changed["newer"] == {"what": 1} and changed["precision"] == "fp16"


def test_minimal_manifests_stay_minimal():
    """What the test fixtures write (tests/toy_artifacts.py: ``source`` a string; tests/trt/_toy.py: a ``toy`` key;
    no seeds, engines or parity) reads back to the same JSON."""
    graphs = {g: {"file": f"{g}.onnx", **IO} for g in ("encoder", "synthesis")}
    for d in (
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": SPEC,
            "graphs": graphs,
            "batch_profile": [1, 1, 8],
            "precision": "fp32",
            "source": "tests/toy_artifacts.py",
        },
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": SPEC,
            "graphs": {g: {"file": f"{g}.onnx", "sha256": "a" * 64} for g in ("encoder", "synthesis")},
            "opset": 17,
            "batch_profile": [1, 1, 4],
            "toy": True,
        },
    ):
        m = Manifest.from_dict(d)
        assert _text(m.to_dict()) == _text(d)
    assert m.engines == () and m.int8 is None and m.seeds == {} and m.extra == {"toy": True}
    bare = Manifest.from_dict({"format": FORMAT, "format_version": FORMAT_VERSION, "spec": SPEC, "graphs": graphs})
    assert bare.profile == BatchProfile(1, 1, 8) and "batch_profile" not in bare.to_dict()


def test_changes_write_like_the_dicts_did():
    """``replace`` on a read manifest writes what editing its dict wrote: a new key at the end, a replaced value in
    place, a new record in the order of its own fields."""
    d = _manifest()
    del d["int8"]
    m = Manifest.from_dict(d)
    rec = Int8Record.from_dict(_int8())
    assert list(dataclasses.replace(m, int8=rec).to_dict()) == list(d) + ["int8"]
    one = dataclasses.replace(m, engines=m.engines[:1]).to_dict()
    assert list(one) == list(d) and one["engines"] == d["engines"][:1]
    built = EngineRecord(
        graph="encoder",
        precision="fp32",
        file="engines/encoder.fp32.engine",
        size_bytes=3,
        compute_capabilities=("8.6",),
        profile=BatchProfile(1, 2, 4),
    )
    assert built.to_dict() == {
        "graph": "encoder",
        "precision": "fp32",
        "file": "engines/encoder.fp32.engine",
        "size_bytes": 3,
        "compute_capabilities": ["8.6"],
        "profile": [1, 2, 4],
    }


def test_stored_nulls_stay_null():
    d = _int8()
    d["measured_on"] = None  # a record from before the CPU was recorded
    rec = Int8Record.from_dict(d)
    assert rec.measured_on is None and rec.to_dict()["measured_on"] is None and list(rec.to_dict()) == list(d)


M = "/a/manifest.json"


@pytest.mark.parametrize(
    "edit,msg",
    [
        (lambda d: [], M + ": expected a JSON object, found list"),
        (lambda d: {**d, "format": "other"}, M + ": format is 'other', expected 'restyle-rt-artifacts'"),
        (
            lambda d: {k: v for k, v in d.items() if k != "format"},
            M + ": format is None, expected 'restyle-rt-artifacts'",
        ),
        (
            lambda d: {**d, "format_version": 2},
            M + ": format_version 2 is not understood by this runtime (expects 1); "
            "re-export with this restyle-rt version",
        ),
        (
            lambda d: {k: v for k, v in d.items() if k != "format_version"},
            M
            + ": format_version None is not understood by this runtime (expects 1); re-export with this restyle-rt version",
        ),
        (lambda d: {k: v for k, v in d.items() if k != "spec"}, M + ": spec is malformed ('spec')"),
        (lambda d: {**d, "spec": {}}, M + ": spec is malformed ('input_hw')"),
        (lambda d: {k: v for k, v in d.items() if k != "graphs"}, M + ": graphs.encoder missing"),
        (lambda d: {**d, "graphs": {"encoder": d["graphs"]["encoder"]}}, M + ": graphs.synthesis missing"),
    ],
)
def test_refusals_are_the_ones_load_always_gave(edit, msg):
    """The format/version refusal lives in Manifest.from_dict only; its messages are load's (ArtifactError)."""
    with pytest.raises(ArtifactError) as e:
        Manifest.from_dict(edit(_manifest()), where=M)
    assert str(e.value) == msg


def _engine_without(key):
    def edit(d):
        d["engines"][1] = {k: v for k, v in d["engines"][1].items() if k != key}
        return d

    return edit


@pytest.mark.parametrize(
    "edit,msg",
    [
        (_engine_without("file"), M + ": engines[1].file missing"),
        (_engine_without("graph"), M + ": engines[1].graph missing"),
        (lambda d: {**d, "engines": None}, M + ": engines is null, expected an array"),
        (
            lambda d: {**d, "engines": [_engine("encoder", "fp16") | {"size_bytes": "12"}]},
            M + ": engines[0].size_bytes is a string, expected an integer",
        ),
        (
            lambda d: {**d, "engines": [_engine("encoder", "fp16") | {"profile": [1, 8, 2]}]},
            M + ": engines[0].profile is malformed (batch profile needs 1 <= min <= opt <= max, got 1,8,2)",
        ),
        (
            lambda d: {**d, "batch_profile": [1, 8]},
            M + ": batch_profile is [1, 8], expected [min, opt, max] batch sizes",
        ),
        (lambda d: {**d, "graphs": {**d["graphs"], "encoder": {"sha256": "a"}}}, M + ": graphs.encoder.file missing"),
        (
            lambda d: {**d, "seeds": {"latent_avg": {"file": 3}}},
            M + ": seeds.latent_avg.file is an integer, expected a string",
        ),
        (lambda d: {**d, "int8": {"graphs": {"encoder": {"cpu": {}}}}}, M + ": int8.graphs.encoder.cpu.file missing"),
        (lambda d: {**d, "int8": {"meets_ship_bar": []}}, M + ": int8.meets_ship_bar is an array, expected an object"),
        (lambda d: {**d, "int8": "yes"}, M + ": int8 is a string, expected an object"),
        (lambda d: {**d, "opset": True}, M + ": opset is a boolean, expected an integer"),
    ],
)
def test_malformed_records_name_the_key(edit, msg):
    with pytest.raises(ArtifactError) as e:
        Manifest.from_dict(edit(_manifest()), where=M)
    assert str(e.value) == msg


def test_a_record_alone_names_what_it_is():
    with pytest.raises(ArtifactError) as e:
        EngineRecord.from_dict({"graph": "encoder", "precision": "fp16"}, where="the encoder fp16 engine record")
    assert str(e.value) == "the encoder fp16 engine record: file missing"
    with pytest.raises(ArtifactError) as e:
        Int8Record.from_dict([], where="the int8 record")
    assert str(e.value) == "the int8 record: is an array, expected an object"


# --- the typed manifest behind artifacts.load / read_manifest / write_manifest -------------------------------------


def test_toy_manifest_round_trips_and_rewrites_byte_for_byte(toy, tmp_path):
    text = (toy[0] / artifacts.MANIFEST).read_text()
    m = artifacts.read_manifest(toy[0])
    assert m == artifacts.load(toy[0]).manifest and _text(m.to_dict()) == _text(json.loads(text))
    artifacts.write_manifest(tmp_path, m)
    assert (tmp_path / artifacts.MANIFEST).read_text() == text


def test_trt_toy_manifest_round_trips(tmp_path):
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trt"))
    try:
        from _toy import make_toy_artifacts
    finally:
        sys.path.pop(0)
    d = make_toy_artifacts(tmp_path / "art")
    stored = json.loads((d / artifacts.MANIFEST).read_text())
    assert _text(artifacts.load(d).manifest.to_dict()) == _text(stored) and stored["toy"] is True


def test_fake_engine_manifest_round_trips(monkeypatch, make_toy):
    """The engine records the TensorRT fakes write (tests/fakes/backend.py) and the repository test's stand-ins."""
    from fakes.backend import fake_backend_env

    env = fake_backend_env(monkeypatch, make_toy)
    stored = json.loads((env.art.root / artifacts.MANIFEST).read_text())
    assert len(stored["engines"]) == 2
    assert _text(env.art.manifest.to_dict()) == _text(stored)
    assert env.art.manifest.find_engine("encoder", "fp32").profile == BatchProfile(1, 2, 3)


def test_edits_made_by_the_commands_read_back(make_toy):
    """upsert_record and save_manifest write typed manifests; a read of the file gives them back."""
    from restyle_rt.engine import records

    d, _ = make_toy("edits")
    (d / records.ENGINES_DIR).mkdir()
    rec = EngineRecord.from_dict(_engine("synthesis", "fp32"))
    written = records.upsert_record(d, rec)
    assert written == artifacts.read_manifest(d) and written.find_engine("synthesis", "fp32") == rec
    stored = json.loads((d / artifacts.MANIFEST).read_text())
    assert stored["engines"] == [_engine("synthesis", "fp32")] and list(stored)[-1] == "engines"
    art = artifacts.load(d)
    art.manifest = dataclasses.replace(art.manifest, int8=Int8Record.from_dict(_int8()))
    art.save_manifest()
    assert json.loads((d / artifacts.MANIFEST).read_text()) == {**stored, "int8": _int8()}


def test_read_manifest_refusals(tmp_path):
    with pytest.raises(ArtifactError) as e:
        artifacts.read_manifest(tmp_path)
    assert str(e.value) == f"{tmp_path} has no manifest.json; is it an artifacts dir written by `restyle-rt export`?"
    (tmp_path / artifacts.MANIFEST).write_text(json.dumps({**_manifest(), "format_version": 0}))
    with pytest.raises(ArtifactError, match=r"manifest\.json: format_version 0 is not understood"):
        artifacts.read_manifest(tmp_path)
    assert artifacts.is_export(tmp_path)  # any version is a previous export (may be replaced)
