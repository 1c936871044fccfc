"""INT8 engines from the calibrated Q/DQ graphs (explicit quantization), built ahead of time (TensorRT-RTX on CPU)."""

from __future__ import annotations

import pytest

from restyle_rt import artifacts as A
from restyle_rt.errors import BuildError

pytestmark = pytest.mark.trt


@pytest.fixture(scope="module")
def calibrated_toy(tmp_path_factory):
    import toy_artifacts

    from restyle_rt.calibration import CalibrationConfig, calibrate

    d, _ = toy_artifacts.build(tmp_path_factory.mktemp("int8") / "art")
    calibrate(d, CalibrationConfig(generated=4, held_out=2, steps=2, progress=False, compare_step1=False))
    return d


def test_int8_engines_build_from_the_trt_encoding(trt_info, calibrated_toy):
    from restyle_rt.engine import build_engines

    recs = {r.graph: r.to_dict() for r in build_engines(calibrated_toy, precision="int8", compute_capabilities=["8.6"])}
    enc = recs["encoder"]
    assert enc["precision"] == "int8" and enc["size_bytes"] > 0
    # strongly typed: the Q/DQ graph with FP16 elsewhere; precision flags: the Q/DQ graph itself
    assert enc["onnx"]["file"] in ("engines/encoder.int8.fp16.onnx", "int8/encoder.trt.onnx")
    assert A.find_engine(A.load(calibrated_toy), "encoder", "int8").sha256 == enc["sha256"]


def test_cpu_encoding_is_refused_by_tensorrt_with_its_reason(trt_info, calibrated_toy):
    """The U8 asymmetric CPU graph is why a second (S8 symmetric) encoding exists; record TensorRT's reason."""
    from restyle_rt.engine.builder import BuildOptions, EngineBuilder

    art = A.load(calibrated_toy)
    b = EngineBuilder(trt_info, BuildOptions("int8", art.profile))
    with pytest.raises(BuildError, match="(?i)zero.?point"):
        b.build(art.root / "int8" / "encoder.cpu.onnx", art.spec, "encoder", ["8.6"])


def test_int8_build_without_calibration_says_what_to_run(trt_info, make_toy):
    from restyle_rt.engine import build_engines

    d, _ = make_toy("nocal")
    with pytest.raises(BuildError, match="restyle-rt calibrate"):
        build_engines(d, precision="int8", compute_capabilities=["8.6"])
