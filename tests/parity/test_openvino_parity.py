"""The OpenVINO backend against the PyTorch reference, like the ORT parity tests, plus its own precisions.

FP32: one graph call (vs the torch export modules) and the whole loop per iteration (vs the official-formulation
torch loop). BF16 (only on a CPU with BF16): the same comparisons against the FP32 torch reference, with the BF16
bounds of the tolerance table. INT8: explicit Q/DQ graphs made here with ``onnxruntime.quantization
.quantize_static`` on the small fixture and recorded in a copy of its manifest as ``restyle-rt calibrate`` does
(``int8``), run by OpenVINO and compared with ONNX Runtime running the same Q/DQ graphs. Also: the compiled-model
cache, ``auto`` precision, errors.
"""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from model_fixtures import EXPORTED, artifacts_path, checkpoint_path

from restyle_rt.artifacts import load, write_manifest
from restyle_rt.errors import ArtifactError, InputError
from restyle_rt.export.checkpoint import load_checkpoint
from restyle_rt.export.fixtures import sample_images
from restyle_rt.export.reference import TorchModels, reference_loop
from restyle_rt.manifest import Int8Record
from restyle_rt.parity import compare, meets_auto_bar, ship_verdict, tolerance
from restyle_rt.runtime.backends import get_backend
from restyle_rt.runtime.hostinfo import bf16_path

ov = pytest.importorskip("openvino", reason="openvino not installed (pip install 'restyle-rt[openvino]')")
from restyle_rt.runtime.backends.openvino import cpu_has_bf16  # noqa: E402

pytestmark = pytest.mark.parity
N_ITERS = 5
PRECISIONS = ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(not cpu_has_bf16(), reason="CPU has no BF16"))]


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    """One compiled-model cache for the module: later tests load what earlier ones compiled (CI time)."""
    return tmp_path_factory.mktemp("ov-cache")


@pytest.fixture(scope="module", params=EXPORTED)
def case(request):
    art = load(artifacts_path(request.param), check_hashes=True)
    models = TorchModels.from_checkpoint(load_checkpoint(checkpoint_path(request.param)))
    return request.param, art, models


def _call_inputs(art, spec, models, batch):
    g = torch.Generator().manual_seed(batch)
    x = sample_images(batch, spec.input_hw, g)
    y = torch.from_numpy(art.avg_feedback)[None].repeat(batch, 1, 1, 1)
    y = y + 0.05 * torch.randn(batch, 3, *spec.input_hw, generator=g)
    w = models.ckpt.latent_avg[None] + 0.3 * torch.randn(batch, spec.n_styles, 512, generator=g)
    return x, y, w


@pytest.mark.parametrize("precision", PRECISIONS)
def test_single_calls_dynamic_batch(case, precision, ov_cache):
    _, art, models = case
    spec = models.ckpt.spec
    with get_backend("openvino", art, precision=precision, cache_dir=ov_cache) as be, torch.no_grad():
        assert be.precision == precision
        for batch in (1, 3):
            x, y, w = _call_inputs(art, spec, models, batch)
            got = be.encode(x.numpy(), y.numpy(), w.numpy()).copy()
            ref = models.encoder(x, y, w).numpy()
            assert tolerance("openvino", precision, "latent_next").check(compare(got, ref)) is None
            rep = compare(got - w.numpy(), ref - w.numpy())
            assert tolerance("openvino", precision, "residual").check(rep) is None, rep
            img, fb = (a.copy() for a in be.synthesize(w.numpy()))
            ref_img, ref_fb = models.synthesis(w)
            assert img.shape == (batch, 3, *spec.image_hw) and img.dtype == np.float32
            assert tolerance("openvino", precision, "image").check(compare(img, ref_img.numpy())) is None
            assert tolerance("openvino", precision, "feedback").check(compare(fb, ref_fb.numpy())) is None


_REF_LOOPS = {}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_loop_parity_per_iteration(case, precision, ov_cache, record_property):
    """OpenVINO loop vs the official-formulation FP32 torch loop, after every iteration."""
    name, art, models = case
    x = sample_images(2, models.ckpt.spec.input_hw, torch.Generator().manual_seed(7))
    if name not in _REF_LOOPS:  # the torch loop is the slow part: once per fixture, for both precisions
        with torch.no_grad():
            _REF_LOOPS[name] = reference_loop(models, x, N_ITERS, official=True)
    ref = _REF_LOOPS[name]
    with get_backend("openvino", art, precision=precision, cache_dir=ov_cache) as be:
        res = be.run_loop(x.numpy(), N_ITERS, return_steps=True)
    table = []
    for t, step in enumerate(ref):
        lat = compare(res.step_latents[t], step.latent.numpy())
        img = compare(res.step_images[t], step.image.numpy())
        table.append({"step": t + 1, "latent_rel_l2": lat.rel_l2, "image_psnr_db": img.psnr_db})
        assert tolerance("openvino-loop", precision, "latent").check(lat) is None, (t, lat)
        assert tolerance("openvino-loop", precision, "image").check(img) is None, (t, img)
    np.testing.assert_array_equal(res.latents, res.step_latents[-1])
    record_property("loop_parity", json.dumps(table))


def test_outputs_are_reused_views(case, ov_cache):
    """The ABC's contract: outputs may be overwritten by the next call (so the loop copies them)."""
    _, art, models = case
    spec = models.ckpt.spec
    with get_backend("openvino", art, cache_dir=ov_cache) as be:
        w1 = np.ascontiguousarray(np.broadcast_to(art.latent_avg, (1, spec.n_styles, 512)))
        first = be.synthesize(w1)[0]
        kept = first.copy()
        be.synthesize(w1 + 0.5)
        assert not np.array_equal(first, kept)  # the view followed the request's output tensor
        np.testing.assert_array_equal(be.synthesize(w1)[0], kept)  # and the graph is deterministic


def test_compiled_model_cache(tmp_path):
    art = load(artifacts_path(EXPORTED[0]))
    with get_backend("openvino", art, cache_dir=tmp_path) as be:
        assert not any(c.get_property("LOADED_FROM_CACHE") for c in be.compiled.values())
    assert any(tmp_path.iterdir())
    with get_backend("openvino", art, cache_dir=tmp_path) as be:
        assert all(c.get_property("LOADED_FROM_CACHE") for c in be.compiled.values())


@pytest.mark.skipif(not cpu_has_bf16(), reason="CPU has no BF16")
def test_mixed_runs_the_encoder_in_bf16_and_the_synthesis_in_fp32(ov_cache):
    """``mixed``: each graph at its own precision: the encoder is BF16's, the synthesis FP32's (bit for bit)."""
    art = load(artifacts_path(EXPORTED[0]))
    x = sample_images(2, art.spec.input_hw, torch.Generator().manual_seed(11)).numpy()
    fb = np.broadcast_to(art.avg_feedback, x.shape).copy()
    w = np.broadcast_to(art.latent_avg, (2,) + art.latent_avg.shape).copy()
    got = {}
    for prec in ("bf16", "fp32", "mixed"):
        with get_backend("openvino", art, precision=prec, cache_dir=ov_cache) as be:
            assert be.precision == prec
            enc = be.encode(x, fb, w).copy()
            got[prec] = (enc, *(a.copy() for a in be.synthesize(enc)))
    np.testing.assert_array_equal(got["mixed"][0], got["bf16"][0])  # the encoder: BF16's
    assert compare(got["bf16"][0] - w, got["fp32"][0] - w).rel_l2 > 1e-4  # which is not FP32's
    fp32_img, fp32_fb = (a.copy() for a in _fp32_synthesis(art, got["mixed"][0], ov_cache))
    np.testing.assert_array_equal(got["mixed"][1], fp32_img)  # the synthesis: FP32's
    np.testing.assert_array_equal(got["mixed"][2], fp32_fb)


def _fp32_synthesis(art, latent, ov_cache):
    with get_backend("openvino", art, precision="fp32", cache_dir=ov_cache) as be:
        return tuple(a.copy() for a in be.synthesize(latent))


def test_auto_precision_meets_the_bar(ov_cache, caplog):
    art = load(artifacts_path(EXPORTED[0]))
    with (
        caplog.at_level("INFO", logger="restyle_rt"),
        get_backend("openvino", art, precision="auto", cache_dir=ov_cache) as be,
    ):
        chosen = be.precision
    assert f"precision auto -> {chosen}" in caplog.text
    # the fastest precision whose recorded ship-bar verdict holds on this CPU's BF16 path, else FP32
    path = bf16_path() if cpu_has_bf16() else ""
    expect = next((p for p in ("bf16", "mixed") if path and ship_verdict("openvino", p, path)[0]), "fp32")
    assert chosen == expect
    if expect == "fp32":
        assert meets_auto_bar("openvino-loop", "fp32")[0]


def test_bad_options(ov_cache):
    art = load(artifacts_path(EXPORTED[0]))
    with pytest.raises(InputError, match="precision must be one of"):
        get_backend("openvino", art, precision="fp8")
    with pytest.raises(InputError, match="hint must be one of"):
        get_backend("openvino", art, hint="fastest")
    with pytest.raises(ArtifactError, match="restyle-rt calibrate"):
        get_backend("openvino", art, precision="int8", cache_dir=ov_cache)


# --- INT8: explicit Q/DQ graphs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_artifacts(tmp_path_factory):
    """A copy of the 32-px pSp fixture with Q/DQ graphs (quantize_static, 8 random calibration batches).

    Activations are U8 (asymmetric), as in the ``cpu`` encoding ``restyle-rt calibrate`` writes and both CPU
    backends run. With S8 activations, OpenVINO 2026.4 on an AMD EPYC (Zen 4; its convolutions run as
    ``brgconv_avx512_I8``) was 0.40 rel-L2 off FP32 where ONNX Runtime was 0.12; with U8 both were 0.09.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = load(artifacts_path(EXPORTED[0]))
    root = tmp_path_factory.mktemp("int8") / "art"
    shutil.copytree(src.root, root, ignore=shutil.ignore_patterns("engines"))
    art = load(root)
    rng = np.random.default_rng(0)
    s, hw = art.spec.n_styles, art.spec.input_hw

    def lat():
        return (art.latent_avg[None] + 0.3 * rng.standard_normal((1, s, 512))).astype(np.float32)

    feeds = {
        "encoder": [
            {
                "image": rng.uniform(-1, 1, (1, 3, *hw)).astype(np.float32),
                "feedback": rng.uniform(-1, 1, (1, 3, *hw)).astype(np.float32),
                "latent": lat(),
            }
            for _ in range(8)
        ],
        "synthesis": [{"latent": lat()} for _ in range(8)],
    }

    class Reader(CalibrationDataReader):
        def __init__(self, items):
            self.it = iter(items)

        def get_next(self):
            return next(self.it, None)

    int8 = {"graphs": {}}  # the record layout restyle-rt calibrate writes (CPU encoding)
    for g in ("encoder", "synthesis"):
        out = root / f"{g}.int8.onnx"
        quantize_static(
            str(art.graph_path(g)),
            str(out),
            Reader(feeds[g]),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        int8["graphs"][g] = {"cpu": {"file": out.name}}
    write_manifest(root, dataclasses.replace(art.manifest, int8=Int8Record.from_dict(int8)))
    return load(root)


def test_int8_runs_the_qdq_graphs_like_ort(int8_artifacts, ov_cache):
    """OpenVINO INT8 vs ONNX Runtime on the same Q/DQ graphs, one call each; and the convolutions run in int8."""
    import onnxruntime as ort

    art = int8_artifacts
    rng = np.random.default_rng(1)
    s, hw = art.spec.n_styles, art.spec.input_hw
    x, y = (rng.uniform(-1, 1, (2, 3, *hw)).astype(np.float32) for _ in range(2))
    w = (art.latent_avg[None] + 0.3 * rng.standard_normal((2, s, 512))).astype(np.float32)
    sess = {
        g: ort.InferenceSession(str(art.root / f"{g}.int8.onnx"), providers=["CPUExecutionProvider"])
        for g in ("encoder", "synthesis")
    }
    ref_lat = sess["encoder"].run(["latent_next"], {"image": x, "feedback": y, "latent": w})[0]
    ref_img, ref_fb = sess["synthesis"].run(["image", "feedback"], {"latent": w})
    with get_backend("openvino", art, precision="int8", cache_dir=ov_cache) as be:
        runtime = be.compiled["synthesis"].get_runtime_model()
        conv_precisions = {
            n.get_rt_info()["runtimePrecision"].astype(str)
            for n in runtime.get_ops()
            if n.get_rt_info()["layerType"].astype(str) in ("Convolution", "Deconvolution")
        }
        assert conv_precisions & {"i8", "u8"}, conv_precisions
        got = be.encode(x, y, w).copy()
        img, fb = (a.copy() for a in be.synthesize(w))
    rep = compare(got - w, ref_lat - w)
    assert tolerance("openvino-vs-ort-qdq", "int8", "residual").check(rep) is None, rep
    assert tolerance("openvino-vs-ort-qdq", "int8", "image").check(compare(img, ref_img)) is None
    assert tolerance("openvino-vs-ort-qdq", "int8", "feedback").check(compare(fb, ref_fb)) is None
