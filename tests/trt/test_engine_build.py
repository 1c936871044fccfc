"""Engine builds with the TensorRT flavour installed here (TensorRT-RTX builds ahead of time on a CPU-only box)."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from restyle_rt import artifacts
from restyle_rt.engine import build_engines, check_record, default_compute_capabilities, incompatibility
from restyle_rt.errors import ArtifactError
from restyle_rt.manifest import EngineRecord, Manifest

pytestmark = pytest.mark.trt
log = logging.getLogger("restyle_rt")

CASES = [(g, p) for p in ("fp32", "fp16") for g in ("encoder", "synthesis")]


@pytest.mark.parametrize("graph,precision", CASES)
def test_engine_built_and_recorded(built, art_dir, trt_info, graph, precision):
    rec = built[(graph, precision)]
    path = art_dir / rec["file"]
    assert rec["file"] == f"engines/{graph}.{precision}.engine" and path.is_file()
    assert path.stat().st_size == rec["size_bytes"] > 0
    assert artifacts.sha256_file(path) == rec["sha256"]
    assert (rec["trt_flavour"], rec["trt_version"]) == (trt_info.flavour, trt_info.version)
    assert rec["strongly_typed"] == trt_info.strongly_typed
    art = artifacts.load(art_dir)
    assert rec["profile"] == art.profile.to_list()
    assert artifacts.find_engine(art, graph, precision).to_dict() == rec  # persisted in manifest.json
    if trt_info.compute_capability_api:
        assert rec["compute_capabilities"] == default_compute_capabilities(trt_info)
        assert "7.5" not in rec["compute_capabilities"]
    if precision == "fp16" and trt_info.strongly_typed:
        assert rec["onnx"]["file"] == f"engines/{graph}.fp16.onnx"


def test_manifest_with_engines_round_trips(built, art_dir):
    """The manifest as the builds left it (real records, settings read back from TensorRT) reads into the typed
    records and back to the same bytes."""
    stored = (art_dir / artifacts.MANIFEST).read_text()
    m = artifacts.read_manifest(art_dir)
    assert json.dumps(m.to_dict(), indent=2) + "\n" == stored
    assert {(r.graph, r.precision) for r in m.engines} >= set(CASES)


@pytest.mark.parametrize("graph", ["encoder", "synthesis"])
def test_fp16_engine_holds_fp16_weights(built, graph):
    """Precision really reaches the plan: FP16 weights make the engine markedly smaller than the FP32 one."""
    fp32, fp16 = built[(graph, "fp32")]["size_bytes"], built[(graph, "fp16")]["size_bytes"]
    assert fp16 < 0.8 * fp32, (fp16, fp32)


def test_current_engines_are_kept(built, art_dir):
    again = build_engines(art_dir, precision="fp16", workspace_gb=1.0)
    assert [r.built_at for r in again] == [built[(r.graph, "fp16")]["built_at"] for r in again]


def test_record_matches_this_runtime(built, art_dir, trt_info):
    art = artifacts.load(art_dir)
    cc = tuple(int(x) for x in built[("encoder", "fp16")]["compute_capabilities"][0].split("."))
    rec = check_record(art, "encoder", "fp16", trt_info.flavour, trt_info.version, cc, verify_hash=True)
    assert rec.to_dict() == built[("encoder", "fp16")]


def _edited_copy(art_dir, tmp_path, **changes):
    """An artifacts view whose encoder fp16 record has ``changes`` applied (manifest only; engines shared)."""
    art = artifacts.load(art_dir)
    manifest = art.manifest.to_dict()
    for rec in manifest["engines"]:
        if (rec["graph"], rec["precision"]) == ("encoder", "fp16"):
            rec.update(changes)
    return artifacts.Artifacts(art.root, Manifest.from_dict(manifest), art.spec, art.latent_avg, art.avg_feedback)


def test_version_mismatch_is_refused(built, art_dir, tmp_path, trt_info):
    art = _edited_copy(art_dir, tmp_path, trt_version="10.3.0.26")
    with pytest.raises(ArtifactError) as e:
        check_record(art, "encoder", "fp16", trt_info.flavour, trt_info.version)
    msg = str(e.value)
    assert "10.3.0.26" in msg and trt_info.version in msg and "--rebuild" in msg and "restyle-rt build" in msg


def test_flavour_mismatch_is_refused(built, art_dir, tmp_path, trt_info):
    other = "tensorrt" if trt_info.is_rtx else "tensorrt-rtx"
    art = _edited_copy(art_dir, tmp_path, trt_flavour=other)
    with pytest.raises(ArtifactError, match=f"built with '{other}'.*this runtime is '{trt_info.flavour}'.*--rebuild"):
        check_record(art, "encoder", "fp16", trt_info.flavour, trt_info.version)


def test_compute_capability_mismatch_is_refused(built, art_dir, tmp_path, trt_info):
    art = _edited_copy(art_dir, tmp_path, compute_capabilities=["8.6", "8.9"])
    with pytest.raises(ArtifactError) as e:
        check_record(art, "encoder", "fp16", trt_info.flavour, trt_info.version, device_cc=(9, 0))
    msg = str(e.value)
    assert "8.6, 8.9" in msg and "this GPU is 9.0" in msg and "--rebuild" in msg


def test_missing_engine_names_the_build_command(trt_info, built, art_dir):
    art = artifacts.load(art_dir)
    art.manifest = dataclasses.replace(art.manifest, engines=())
    with pytest.raises(ArtifactError, match="no encoder fp16 engine.*restyle-rt build .* --precision fp16"):
        check_record(art, "encoder", "fp16", trt_info.flavour, trt_info.version)


def test_incompatibility_lists_every_reason():
    rec = EngineRecord(
        graph="encoder",
        precision="fp16",
        file="engines/encoder.fp16.engine",
        trt_flavour="tensorrt",
        trt_version="10.3.0",
        compute_capabilities=("8.7",),
    )
    assert incompatibility(rec, "tensorrt", "10.3.0", (8, 7)) == []
    why = incompatibility(rec, "tensorrt", "10.13.0", (8, 6))
    assert len(why) == 2 and "10.3.0" in why[0] and "10.13.0" in why[0] and "8.6" in why[1]


def test_cli_build_reports_engines(built, art_dir, capsys):
    from restyle_rt.cli import main

    assert main(["build", str(art_dir), "--precision", "fp32", "--workspace", "1"]) == 0
    out = capsys.readouterr().out
    assert "encoder" in out and "synthesis" in out and "engines/encoder.fp32.engine" in out


def test_cli_rejects_bad_batch(tmp_path, capsys):
    from restyle_rt.cli import main

    with pytest.raises(SystemExit):
        main(["build", str(tmp_path), "--batch", "4,2,1"])
