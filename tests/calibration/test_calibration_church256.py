"""Loop-aware INT8 calibration of a real-architecture model, end to end: church-256 (ResNet34 backbone, 14 styles,
256 px, the official channel layout; random weights).

The model is the one ``tests/golden`` checks against the official code: the same checkpoint and export, from the
same cache files (one export per CI run). Calibration writes into a copy of the artifacts directory, never into
the shared one. Images: the checkpoint's own generator through its mapping network.
Bounds: ``parity.TOLERANCES["ort-int8-loop-church256-arch"]``, measured on this model (a proxy: random weights do not
contract through the loop like trained ones).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_fixtures import CACHE, _source_hash

from restyle_rt import artifacts as A
from restyle_rt.calibration import CalibrationConfig, calibrate

# torch (export, mapping network) + ONNX Runtime on CPU. `slow`: measured 2057 s (fixture 2033 s: checkpoint, export,
# calibration with a 40-layer sweep) on the shared 2-vCPU VM at load 6-10; its cost on a quiet CI machine was not
# measured, so it stays out of the default selection until it is (run: python3 -m pytest -m slow tests/calibration).
pytestmark = [pytest.mark.parity, pytest.mark.slow]

NAME = "church-256"
GOLDENS = Path(__file__).resolve().parents[1] / "golden" / "goldens.json"
STEPS = 2


def _church256() -> tuple:
    """(checkpoint, artifacts dir): the cache files tests/golden/test_goldens.py makes for its church-256 golden."""
    from restyle_rt.export import export_artifacts
    from restyle_rt.export.fixtures import make_checkpoint

    mc = json.loads(GOLDENS.read_text())["configs"][NAME]["make_checkpoint"]
    ckpt = CACHE / f"golden-{NAME}-{_source_hash()}.pt"
    if not ckpt.exists():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        make_checkpoint(
            tmp,
            mc["encoder_type"],
            mc["dataset_type"],
            mc["output_size"],
            seed=mc["seed"],
            latent_avg_shape=mc["latent_avg_shape"],
        )
        os.replace(tmp, ckpt)
    art = CACHE / f"golden-{NAME}-{_source_hash()}-artifacts"
    if not (art / "manifest.json").exists():
        export_artifacts(ckpt, art, max_batch=2, overwrite=True, progress=False)
    return ckpt, art


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    pytest.importorskip("torch", reason="the church-256 model is made and exported with torch")
    ckpt, shared = _church256()
    d = tmp_path_factory.mktemp("church256") / "art"
    d.mkdir()
    for f in shared.iterdir():  # a real copy: onnx refuses external data behind a symbolic or a hard link
        if f.is_file():
            shutil.copy(f, d / f.name)
    cfg = CalibrationConfig(
        generated=2,
        checkpoint=str(ckpt),
        held_out=2,
        steps=STEPS,
        method="entropy",
        graphs=("encoder",),
        sensitivity_images=1,
        keep_rule="bar",
        progress=False,
        batch=2,
    )
    return d, calibrate(d, cfg), ckpt


def test_sweep_measures_every_layer_and_keeps_the_most_sensitive(calibrated):
    d, rec, _ = calibrated
    sens = rec["sensitivity"]["encoder"]
    layers = [
        n
        for n in onnx.load(str(A.load(d).graph_path("encoder")), load_external_data=False).graph.node
        if n.op_type in rec["op_types"]
    ]
    assert sens["layers"] == len(layers) == 40  # ResNet34 body + the 14 style heads (grouped), all Conv
    table = [line.split("\t") for line in (d / "int8" / "encoder.sensitivity.tsv").read_text().splitlines()[1:]]
    assert len(table) == len(layers) and all(float(v) > 0 for _, v, _ in table)  # each layer alone moves the loop
    kept = rec["kept_layers"]["encoder"]
    assert [n for n, _, k in table if k == "1"] == kept == [n for n, _, _ in table[: len(kept)]]
    curve = rec["keep_curve"]["encoder"]
    assert [p["kept"] for p in curve] == list(range(len(layers) // 10 + 1))
    # keeping the most sensitive tenth in FP32 lowers the loop error (measured, not assumed)
    assert curve[-1]["worst_latent_rel_l2"] < curve[0]["worst_latent_rel_l2"]


def test_qdq_graphs_are_valid_and_keep_the_kept_layers_fp32(calibrated):
    d, rec, _ = calibrated
    kept = set(rec["kept_layers"]["encoder"])
    for enc, zp_type in (("cpu", onnx.TensorProto.UINT8), ("trt", onnx.TensorProto.INT8)):
        path = d / rec["graphs"]["encoder"][enc]["file"]
        onnx.checker.check_model(str(path))
        m = onnx.load(str(path), load_external_data=False)
        inits = {t.name: t for t in m.graph.initializer}
        dq_out = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
        layers = [n for n in m.graph.node if n.op_type in rec["op_types"]]
        quantized = {n.name for n in layers if n.input[1] in dq_out}
        assert quantized == {n.name for n in layers} - kept, enc  # every layer INT8 except the kept ones
        zps = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]
        assert zps and all(z.data_type == zp_type for z in zps), enc
        if enc == "trt":  # TensorRT's rules: zero points 0, no INT32 bias
            assert all(not np.any(onnx.numpy_helper.to_array(z)) for z in zps)
            assert not any(t.data_type == onnx.TensorProto.INT32 for t in m.graph.initializer)


def test_per_step_accuracy_within_the_bounds_measured_on_this_model(calibrated):
    from restyle_rt.parity import tolerance

    _, rec, _ = calibrated
    lat = tolerance("ort-int8-loop-church256-arch", "int8", "latent")
    img = tolerance("ort-int8-loop-church256-arch", "int8", "image")
    for enc, rows in rec["accuracy"]["encoder"].items():
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
        for r in rows:
            assert 0 < r["latent_rel_l2"] <= lat.rel_l2, (enc, r)
            assert r["image_psnr_db"] >= img.min_psnr_db, (enc, r)


def test_runtime_runs_the_int8_encoder_as_the_sweep_emulated_it(calibrated):
    """The real INT8 kernels (ORT fuses the Q/DQ convolutions) on the sweep's image vs the sweep's emulation of the
    same configuration (FP32 kernels on Q/DQ values), per step."""
    from restyle_rt.calibration import data as D
    from restyle_rt.runtime.backends.ort import OrtBackend

    d, rec, ckpt = calibrated
    art = A.load(d)
    x = D.generated(art, 1, 1, seed=0, checkpoint=str(ckpt)).calib  # calibration image 0: the sweep's image
    with OrtBackend(art) as f32, OrtBackend(art, precision="int8") as i8:
        a, b = f32.run_loop(x, STEPS, return_steps=True), i8.run_loop(x, STEPS, return_steps=True)
    assert i8.graph_files["encoder"].name == "encoder.cpu.onnx"
    emulated = rec["keep_curve"]["encoder"][len(rec["kept_layers"]["encoder"])]["rows"]
    for t, row in enumerate(emulated):
        real = float(np.linalg.norm(b.step_latents[t] - a.step_latents[t]) / np.linalg.norm(a.step_latents[t]))
        assert abs(real - row["latent_rel_l2"]) <= 0.1 * row["latent_rel_l2"], (t + 1, real, row)
