"""Loop-aware INT8 calibration end to end on the toy model: data, Q/DQ graphs, manifest, runtime, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from restyle_rt import artifacts as A
from restyle_rt.calibration import CalibrationConfig, calibrate, meets_bar
from restyle_rt.calibration import data as D
from restyle_rt.calibration import sensitivity as S
from restyle_rt.errors import ArtifactError, InputError
from restyle_rt.parity import SHIP_REF_PSNR_DB
from restyle_rt.runtime import hostinfo
from restyle_rt.runtime.backends.ort import OrtBackend

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    import toy_artifacts

    d, _ = toy_artifacts.build(tmp_path_factory.mktemp("calib") / "art")
    rec = calibrate(d, CalibrationConfig(generated=6, held_out=3, steps=3, progress=False))
    return d, rec


def _qdq_nodes(path):
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return m, [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")], inits


def test_manifest_records_graphs_data_and_per_step_accuracy(calibrated):
    d, rec = calibrated
    man = A.load(d).manifest.int8.to_dict()
    assert man == json.loads(json.dumps(rec))
    assert json.dumps(A.read_manifest(d).to_dict(), indent=2) + "\n" == (d / A.MANIFEST).read_text()  # round trip
    assert man["data"]["count"] == 6 and man["data"]["held_out"] == 3 and man["data"]["loop_aware"]
    assert man["data"]["feeds_per_graph"] == 6 * 3
    assert set(man["graphs"]["encoder"]) == {"cpu", "trt"}
    for label in ("encoder", "encoder (step-1-only calibration)"):
        rows = man["accuracy"][label]["cpu"]
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert all(r["latent_rel_l2"] > 0 for r in rows)  # INT8 really changed the loop
    for f in (d / "int8" / "encoder.ranges.json", d / "int8" / "encoder.cpu.onnx", d / "int8" / "encoder.trt.onnx"):
        assert f.is_file()


def test_calibrate_writes_its_plots(calibrated):
    pytest.importorskip("matplotlib")
    d, rec = calibrated
    want = {f"{g}.keep_curve.png" for g in rec["keep_curve"]} | {"accuracy.png"}
    assert "encoder.keep_curve.png" in want and all((d / "int8" / f).stat().st_size > 0 for f in want)


def test_held_out_accuracy_within_the_measured_toy_bound(calibrated):
    from restyle_rt.parity import tolerance

    _, rec = calibrated
    lat, img = tolerance("ort-int8-loop-toy", "int8", "latent"), tolerance("ort-int8-loop-toy", "int8", "image")
    for label, encs in rec["accuracy"].items():
        for enc, rows in encs.items():
            for r in rows:
                assert r["latent_rel_l2"] <= lat.rel_l2, (label, enc, r)
                assert r["image_psnr_db"] is None or r["image_psnr_db"] >= img.min_psnr_db, (label, enc, r)


def test_cpu_encoding_is_u8_asymmetric_and_trt_encoding_is_s8_symmetric_without_int32_bias(calibrated):
    d, _ = calibrated
    for enc, act_type in (("cpu", np.uint8), ("trt", np.int8)):
        m, qdq, inits = _qdq_nodes(d / "int8" / f"encoder.{enc}.onnx")
        onnx.checker.check_model(m, full_check=True)
        assert any(n.op_type == "QuantizeLinear" for n in qdq)
        acts = [inits[n.input[2]] for n in qdq if n.op_type == "QuantizeLinear"]
        assert all(z.dtype == act_type for z in acts)
        weights = [inits[n.input[0]] for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits]
        assert weights and all(w.dtype == np.int8 for w in weights)  # weights S8 in both encodings
        if enc == "trt":
            assert all(not np.any(inits[n.input[2]]) for n in qdq)  # every zero point 0 (TensorRT's rule)
            assert not any(t.data_type == onnx.TensorProto.INT32 for t in m.graph.initializer)


def test_runtime_runs_int8_and_auto_follows_the_recorded_bar(calibrated, caplog):
    d, rec = calibrated
    art = A.load(d)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, *art.spec.input_hw)).astype(np.float32)
    with OrtBackend(art) as f32, OrtBackend(art, precision="int8") as i8:
        a, b = f32.run_loop(x, 3).latents, i8.run_loop(x, 3).latents
    assert i8.graph_files["encoder"].name == "encoder.cpu.onnx"
    assert 0 < np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05
    last = rec["accuracy"]["encoder+synthesis" if "synthesis" in rec["graphs"] else "encoder"]["cpu"][-1]
    ok = rec["meets_ship_bar"]["encoder"] and (last["image_psnr_db"] or float("inf")) >= SHIP_REF_PSNR_DB
    assert rec["measured_on"]["cpu_id"] == hostinfo.cpu_id() and rec["measured_on"]["cpu"] == hostinfo.cpu_model()
    assert OrtBackend(art, precision="auto").precision == ("int8" if ok else "fp32")
    int8 = art.manifest.int8
    missed = dataclasses.replace(int8, meets_ship_bar={**int8.meets_ship_bar, "encoder": False})
    art.manifest = dataclasses.replace(art.manifest, int8=missed)
    assert OrtBackend(art, precision="auto").precision == "fp32"
    art.manifest = dataclasses.replace(art.manifest, int8=None)
    with pytest.raises(ArtifactError, match="restyle-rt calibrate"):
        OrtBackend(art, precision="int8")
    assert OrtBackend(art, precision="auto").precision == "fp32"


def test_folder_source_holds_out_the_last_images(make_toy, rgb_images):
    d, _ = make_toy("fold")
    paths = rgb_images(5, folder="imgs")
    imgs = D.from_folder(A.load(d), str(paths[0].parent), None, 2)
    assert imgs.calib.shape[0] == 3 and imgs.held_out.shape[0] == 2
    assert not any(np.array_equal(c, h) for c in imgs.calib for h in imgs.held_out)
    with pytest.raises(InputError, match="need at least 6"):
        D.from_folder(A.load(d), str(paths[0].parent), None, 5)


def test_generated_held_out_images_differ_from_calibration(make_toy):
    d, _ = make_toy("gen")
    imgs = D.generated(A.load(d), 4, 4, seed=0)
    assert not any(np.allclose(c, h) for c in imgs.calib for h in imgs.held_out)


def test_keep_rule():
    sens = {f"c{i}": v for i, v in enumerate([5.0, 3.0, 1.0, 0.5] + [0.1] * 16)}
    assert S.choose_kept(sens, share=0.5, max_keep_frac=0.1) == ["c0", "c1"]  # 8.0 of 11.1 > half, cap 2
    assert S.choose_kept(sens, share=0.9, max_keep_frac=0.1) == ["c0", "c1"]  # capped at 10 % of 20
    assert S.choose_kept({"a": 1.0}, 0.5, 0.1) == []  # < 10 layers: none kept
    rows = lambda lat, db: [{"step": 1, "latent_rel_l2": lat, "image_psnr_db": db}]  # noqa: E731
    sw = S.Sweep(
        sens,
        [
            {"kept": k, "worst_latent_rel_l2": v, "rows": rows(v, 40.0)}
            for k, v in enumerate([0.2, 0.1, 0.045, 0.03, 0.01])
        ],
    )
    bar = {"latent_rel_l2": 0.05, "image_psnr_db": 28.0}
    assert S.kept_by_rule(sw, "bar", 0.5, 0.1, bar) == ["c0", "c1", "c2"]  # first point with 0.03 <= 0.8 * 0.05
    sw.curve = sw.curve[:3]  # no point within the cap meets 0.8x the bar: the smallest error
    assert S.kept_by_rule(sw, "bar", 0.5, 0.1, bar) == ["c0", "c1"]
    sw.curve[1]["rows"] = rows(0.001, 25.0)  # the image bar counts too
    sw.curve[1]["worst_latent_rel_l2"] = 0.001
    sw.curve.append({"kept": 3, "worst_latent_rel_l2": 0.002, "rows": rows(0.002, 31.0)})
    assert S.kept_by_rule(sw, "bar", 0.5, 0.1, bar) == ["c0", "c1", "c2"]
    with pytest.raises(InputError, match="keep rule"):
        S.kept_by_rule(sw, "most", 0.5, 0.1, bar)
    assert meets_bar([{"latent_rel_l2": 0.01, "image_psnr_db": 40.0}])
    assert not meets_bar([{"latent_rel_l2": 0.01, "image_psnr_db": 20.0}])


def test_cli_calibrate_and_invert_int8(make_toy, rgb_images, tmp_path, capsys):
    from restyle_rt.cli import main

    d, _ = make_toy("cli")
    paths = rgb_images(6, folder="cal")
    assert (
        main(
            ["calibrate", str(d), "--images", str(paths[0].parent), "--held-out", "2", "--steps", "2", "--encoder-only"]
        )
        == 0
    )
    assert "per step latent rel-L2" in capsys.readouterr().out
    assert A.load(d).manifest.int8.data["source"].startswith("images:")
    assert (
        main(
            [
                "invert",
                str(d),
                str(paths[0]),
                "--out",
                str(tmp_path / "o"),
                "--backend",
                "ort",
                "--precision",
                "int8",
                "--iters",
                "2",
            ]
        )
        == 0
    )
    assert main(["calibrate", str(d), "--generated", "0"]) == 2  # typed error -> one line, exit 2


def test_switch_graph_emulates_the_real_qdq_graphs(make_toy, tmp_path):
    """The sweep's switchable graph (one session, a mask per configuration) reproduces ``quantize_static``'s
    graphs for one layer, for every layer and for none."""
    from restyle_rt.calibration import emulate as E
    from restyle_rt.calibration import qdq
    from restyle_rt.calibration.loop import FeedReader, run_loop, session

    d, _ = make_toy("emu")
    art = A.load(d)
    x = D.generated(art, 3, 1, seed=0).calib
    f32 = {g: session(art.graph_path(g)) for g in ("encoder", "synthesis")}
    feeds = run_loop(art, f32["encoder"], f32["synthesis"], x, 2)
    enc = qdq.named(art.graph_path("encoder"), tmp_path)
    ranges = qdq.save_ranges(qdq.compute_ranges(enc, FeedReader(feeds.encoder), "entropy"), tmp_path / "r.json")
    full = qdq.write_qdq(enc, tmp_path / "all.onnx", ranges, "entropy", "cpu")
    sw = E.switch_model(enc, full, tmp_path / "sw.onnx", qdq.OP_TYPES)
    emu = session(sw.path)
    nodes = qdq.quantizable_nodes(enc)
    assert nodes and len(sw.owners) >= 2 * len(nodes)  # at least an activation and a weight pair per layer
    feed = feeds.encoder[1]  # step 2: feedback and latent differ from the averages

    def out(sess):
        return sess.run(["latent_next"], feed)[0]

    ref = out(f32["encoder"])
    np.testing.assert_array_equal(out(E.MaskedSession(emu, sw.mask([]))), ref)  # nothing quantized: exact FP32
    configs = [[n] for n in nodes] + [nodes]
    for k, include in enumerate(configs):
        real = out(session(qdq.write_qdq(enc, tmp_path / f"real{k}.onnx", ranges, "entropy", "cpu", include=include)))
        got = out(E.MaskedSession(emu, sw.mask(include)))
        err = np.linalg.norm(real - ref)
        assert err > 0, include  # the configuration really quantizes something
        assert np.linalg.norm(got - real) <= 0.05 * err, include  # emulation error << quantization error


def test_fast_entropy_threshold_equals_onnxruntimes():
    from onnxruntime.quantization.calibrate import HistogramCollector

    from restyle_rt.calibration.qdq import entropy_threshold

    rng = np.random.default_rng(0)
    ort_col = HistogramCollector("entropy", True, 512, 128, None, None)
    for data in (
        rng.standard_normal(20000),
        np.maximum(rng.standard_normal(20000), 0),  # ReLU: half the bins 0
        np.concatenate([rng.standard_normal(20000), 30 * rng.standard_normal(20)]),  # outliers
        rng.laplace(size=300),
    ):  # sparse histogram
        data = data.astype(np.float32)
        r = float(np.abs(data).max())
        h, e = np.histogram(data, 512, range=(-r, r))
        hist = (h, e.astype(np.float32), data.min(), data.max())
        assert entropy_threshold(hist, 128) == ort_col.get_entropy_threshold(hist, 128)


def test_switch_graph_emulates_fused_integer_convolutions(tmp_path):
    """Conv layers (ORT fuses their Q/DQ into integer kernels; the switchable graph runs FP32 kernels on Q/DQ
    values): the emulated output of each configuration agrees with the real graph far below the INT8 error."""
    from onnx import TensorProto, helper

    from restyle_rt.calibration import emulate as E
    from restyle_rt.calibration import qdq
    from restyle_rt.calibration.loop import FeedReader, session

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 3, 3, 3)) * 0.3, rng.standard_normal((8, 8, 3, 3)) * 0.2
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for a, n in ((w1, "w1"), (rng.standard_normal(8) * 0.1, "b1"), (w2, "w2"), (rng.standard_normal(8) * 0.1, "b2"))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], "conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )
    f32 = tmp_path / "convs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(f32))
    feeds = [{"x": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}]
    ranges = qdq.save_ranges(qdq.compute_ranges(f32, FeedReader(feeds, batch=1), "entropy"), tmp_path / "r.json")
    sw = E.switch_model(
        f32, qdq.write_qdq(f32, tmp_path / "all.onnx", ranges, "entropy", "cpu"), tmp_path / "sw.onnx", qdq.OP_TYPES
    )
    emu, x = session(sw.path), {"x": feeds[0]["x"][:1]}
    ref = session(f32).run(["y"], x)[0]
    for k, include in enumerate((["conv1"], ["conv2"], ["conv1", "conv2"])):
        real = session(qdq.write_qdq(f32, tmp_path / f"r{k}.onnx", ranges, "entropy", "cpu", include=include))
        a, b = real.run(["y"], x)[0], E.MaskedSession(emu, sw.mask(include)).run(["y"], x)[0]
        err = np.linalg.norm(a - ref)
        assert err > 1e-3 * np.linalg.norm(ref), include
        assert np.linalg.norm(b - a) <= 0.1 * err, (include, np.linalg.norm(b - a) / err)


def test_recorded_keep_rule_says_which_graphs_were_swept():
    """Explicit kept layers for one graph only: the other still goes through the sweep, and the record says so."""
    from restyle_rt.calibration.pipeline import _rule_text

    swept = _rule_text(CalibrationConfig(generated=2))
    assert swept.startswith("per-layer loop sensitivity") and "rule 'share'" in swept
    one = _rule_text(CalibrationConfig(generated=2, kept={"encoder": ["/conv1/Conv"]}))
    assert one == f"explicit kept layers for encoder (no sensitivity sweep); synthesis: {swept}"
    both = _rule_text(CalibrationConfig(generated=2, kept={"encoder": [], "synthesis": []}))
    assert both == "explicit kept layers for encoder, synthesis (no sensitivity sweep)"
