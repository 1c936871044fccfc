"""Stale engines are rebuilt, current ones kept: source graph, batch profile, TensorRT version, file size, precision.

The build decision (``build_engines``) is tested with the real TensorRT flavour installed here, but with the plan
compilation itself replaced by a counter that writes a few bytes: what is under test is *whether* an engine is
(re)built, not TensorRT. Runs on the toy artifacts (tests/trt/_toy.py), seconds.
"""

from __future__ import annotations

import json

import pytest

from restyle_rt import artifacts
from restyle_rt.engine import builder as builder_mod
from restyle_rt.engine import check_record, records
from restyle_rt.errors import ArtifactError
from restyle_rt.manifest import EngineRecord
from restyle_rt.spec import BatchProfile

pytestmark = pytest.mark.trt


@pytest.fixture
def toy_dir(tmp_path, trt_info):
    pytest.importorskip("torch")
    from _toy import make_toy_artifacts

    return make_toy_artifacts(tmp_path / "art")


@pytest.fixture
def builds(monkeypatch):
    """List of (graph, onnx file name) compiled; each plan is distinct bytes."""
    calls = []

    def fake_build(self, onnx_path, spec, graph, ccs, keep):
        calls.append((graph, onnx_path.name))
        return f"plan {graph} #{len(calls)}".encode(), {}  # (plan, settings read back): none to read from a fake

    monkeypatch.setattr(builder_mod.EngineBuilder, "build", fake_build)
    return calls


def _build(root, **kw):
    return builder_mod.build_engines(root, precision=kw.pop("precision", "fp32"), workspace_gb=1.0, **kw)


def _edit_record(root, graph, precision, **changes):
    rec = artifacts.find_engine(artifacts.load(root), graph, precision)
    records.upsert_record(root, EngineRecord.from_dict({**rec.to_dict(), **changes}))


def test_current_engines_are_not_rebuilt(toy_dir, builds):
    _build(toy_dir)
    assert sorted(g for g, _ in builds) == ["encoder", "synthesis"]
    _build(toy_dir)
    assert len(builds) == 2


def test_changed_source_graph_is_rebuilt(toy_dir, builds):
    import onnx

    _build(toy_dir)
    # re-export: the encoder graph changes (and the manifest records its new hash, as the exporter does)
    path = toy_dir / "encoder.onnx"
    model = onnx.load(str(path))
    model.doc_string = "re-exported"
    onnx.save(model, str(path))
    manifest = json.loads((toy_dir / artifacts.MANIFEST).read_text())
    manifest["graphs"]["encoder"]["sha256"] = artifacts.sha256_file(path)
    artifacts.write_manifest(toy_dir, manifest)
    _build(toy_dir)
    assert [g for g, _ in builds[2:]] == ["encoder"]
    rec = artifacts.find_engine(artifacts.load(toy_dir), "encoder", "fp32")
    assert rec.source_sha256 == artifacts.sha256_file(path)


def test_changed_profile_is_rebuilt(toy_dir, builds):
    _build(toy_dir)
    _build(toy_dir, profile=BatchProfile(1, 2, 4))
    assert len(builds) == 4
    assert artifacts.find_engine(artifacts.load(toy_dir), "synthesis", "fp32").profile.to_list() == [1, 2, 4]


@pytest.mark.parametrize(
    "field,value",
    [("trt_version", "0.0.1"), ("trt_flavour", "other-trt"), ("size_bytes", 1), ("compute_capabilities", ["1.0"])],
)
def test_engine_from_another_build_is_rebuilt(toy_dir, builds, field, value):
    _build(toy_dir)
    _edit_record(toy_dir, "encoder", "fp32", **{field: value})
    _build(toy_dir)
    assert [g for g, _ in builds[2:]] == ["encoder"], field
    assert artifacts.find_engine(artifacts.load(toy_dir), "encoder", "fp32").to_dict()[field] != value


def test_precisions_are_separate_engines(toy_dir, builds, trt_info):
    _build(toy_dir)
    _build(toy_dir, precision="fp16")
    assert len(builds) == 4  # an fp32 engine never stands in for fp16
    art = artifacts.load(toy_dir)
    assert {r.file for r in art.manifest.engines} == {
        records.engine_file(g, p) for g in ("encoder", "synthesis") for p in ("fp32", "fp16")
    }


def test_stale_engine_is_refused_at_load(toy_dir, builds, trt_info):
    """The runtime side: a record from another TensorRT version, or one missing for the precision, is refused."""
    _build(toy_dir)
    art = artifacts.load(toy_dir)
    assert check_record(art, "encoder", "fp32", trt_info.flavour, trt_info.version).graph == "encoder"
    with pytest.raises(ArtifactError, match="no encoder fp16 engine"):
        check_record(art, "encoder", "fp16", trt_info.flavour, trt_info.version)
    _edit_record(toy_dir, "encoder", "fp32", trt_version="0.0.1")
    with pytest.raises(ArtifactError, match=r"0\.0\.1.*--rebuild"):
        check_record(artifacts.load(toy_dir), "encoder", "fp32", trt_info.flavour, trt_info.version)
