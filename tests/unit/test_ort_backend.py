"""ORT backend on toy artifacts: maths, IOBinding loop, contract checks, registry, errors, memory soak."""

from __future__ import annotations

import gc
import json
import logging
import os

import numpy as np
import pytest

from restyle_rt import artifacts
from restyle_rt.errors import ArtifactError, BackendUnavailable, InputError
from restyle_rt.runtime import backends
from restyle_rt.runtime.api import Inverter
from restyle_rt.runtime.backends import choose
from restyle_rt.runtime.backends.ort import OrtBackend

pytestmark = pytest.mark.unit

ATOL = 1e-5  # ORT float32 vs the float64 NumPy restatement; measured max-abs 6e-8 on the toy


def _x(n, hw=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, 3, *hw)) * np.linspace(0.1, 1, n)[:, None, None, None]).astype(np.float32)


@pytest.fixture
def ort_backend(toy):
    with OrtBackend(artifacts.load(toy[0])) as b:
        yield b


def test_encode_synthesize_match_restatement(ort_backend, toy):
    _, ref = toy
    x, y = _x(3), _x(3, seed=1)
    w = np.random.default_rng(2).standard_normal((3, 4, 512)).astype(np.float32)
    np.testing.assert_allclose(ort_backend.encode(x, y, w), ref.encode(x, y, w), atol=ATOL, rtol=0)
    img, fb = ort_backend.synthesize(w)
    ref_img, ref_fb = ref.synthesize(w)
    assert img.shape == (3, 3, 24, 24) and fb.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(img, ref_img, atol=ATOL, rtol=0)
    np.testing.assert_allclose(fb, ref_fb, atol=ATOL, rtol=0)
    assert ort_backend.providers == ["CPUExecutionProvider"] and not ort_backend.io_binding


def test_loop_matches_restatement_per_step(ort_backend, toy):
    x = _x(4)
    res = ort_backend.run_loop(x, 5, return_steps=True)
    lats, imgs = toy[1].loop(x, 5)
    for t in range(5):
        np.testing.assert_allclose(res.step_latents[t], lats[t], atol=ATOL, rtol=0)
        np.testing.assert_allclose(res.step_images[t], imgs[t], atol=ATOL, rtol=0)


def test_iobinding_loop_equals_host_loop(toy):
    """The device (IOBinding ping-pong) loop, run with host memory: identical results to the host loop."""
    art = artifacts.load(toy[0])
    x = _x(3)
    with OrtBackend(art) as host, OrtBackend(art, io_binding=True) as bound:
        a = host.run_loop(x, 4, return_steps=True)
        b = bound.run_loop(x, 4, return_steps=True)
    np.testing.assert_array_equal(a.latents, b.latents)
    np.testing.assert_array_equal(a.images, b.images)
    for t in range(4):
        np.testing.assert_array_equal(a.step_latents[t], b.step_latents[t])
        np.testing.assert_array_equal(a.step_images[t], b.step_images[t])
    np.testing.assert_array_equal(b.steps_used, [4, 4, 4])


def test_cars_shapes(make_toy):
    import toy_artifacts

    d, ref = make_toy("cars", spec=toy_artifacts.TOY_CARS_SPEC)
    with Inverter.load(d, backend="ort") as inv:
        x = _x(2, hw=(12, 16))
        res = inv.invert(x, n_iters=2)
    assert res.images.shape == (2, 3, 18, 24)
    np.testing.assert_allclose(res.latents, ref.loop(x, 2)[0][-1], atol=ATOL, rtol=0)


def test_out_of_profile_batch_names_the_profile(ort_backend):
    x = _x(9)
    w = np.zeros((9, 4, 512), np.float32)
    with pytest.raises(
        InputError,
        match=r"ort backend encoder: batch 9 is outside the artifacts' batch profile "
        r"\[min 1, opt 1, max 8\]",
    ):
        ort_backend.encode(x, x, w)
    with pytest.raises(InputError, match=r"batch 9 is outside .*\[min 1, opt 1, max 8\]"):
        ort_backend.synthesize(w)
    with pytest.raises(InputError, match=r"batch 9 is outside"):
        ort_backend.run_loop(x, 1)


def test_wrong_input_shape_or_dtype(ort_backend):
    x = _x(1)
    with pytest.raises(InputError, match=r"input latent must be float32 \[1, 4, 512\], got float64 \[1, 4, 512\]"):
        ort_backend.encode(x, x, np.zeros((1, 4, 512)))


def test_wrong_io_names_refused(make_toy):
    d, _ = make_toy("badnames", encoder_names={"latent_next": "codes"})
    with pytest.raises(
        ArtifactError,
        match=r"encoder\.onnx does not match the graph contract: outputs: expected "
        r"\['latent_next'\], found \['codes'\]",
    ):
        Inverter.load(d, backend="ort")


def test_wrong_static_dims_refused(make_toy):
    import toy_artifacts

    from restyle_rt.spec import ModelSpec

    d, _ = make_toy("baddims")
    m = json.loads((d / "manifest.json").read_text())  # claim 5 styles; the graphs have 4
    spec = ModelSpec.from_dict(m["spec"])
    m["spec"]["n_styles"] = 5
    artifacts.write_manifest(d, m)
    np.save(d / "latent_avg.npy", np.zeros((5, 512), np.float32))
    assert spec.n_styles == toy_artifacts.TOY_SPEC.n_styles == 4
    with pytest.raises(ArtifactError, match=r"latent: expected shape \['batch', 5, 512\], found \['batch', 4, 512\]"):
        Inverter.load(d, backend="ort")


def test_wrong_format_version_refused(make_toy):
    d, _ = make_toy("v99", format_version=99)
    with pytest.raises(ArtifactError, match=r"format_version 99 is not understood by this runtime \(expects 1\)"):
        Inverter.load(d)


def test_missing_artifacts_dir(tmp_path):
    with pytest.raises(ArtifactError, match=r"artifacts directory .*nowhere does not exist"):
        Inverter.load(tmp_path / "nowhere")


def test_unknown_backend_name(toy):
    with pytest.raises(InputError, match=r"unknown backend 'tensorflow'; choose one of auto, ort, trt"):
        Inverter.load(toy[0], backend="tensorflow")


def test_unavailable_named_backend_names_the_fix(toy, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "fake", ("restyle_rt.runtime.backends.no_such", "X", "restyle-rt[fake]"))
    with pytest.raises(BackendUnavailable, match=r"backend 'fake' is unavailable: .*not part of this restyle-rt"):
        backends.get_backend("fake", artifacts.load(toy[0]))
    monkeypatch.setitem(
        backends.REGISTRY, "fake2", ("restyle_rt.runtime.backends.ort", "OrtBackend", "pip install 'extra-x'")
    )
    monkeypatch.setattr(OrtBackend, "available", classmethod(lambda cls: (False, "no onnxruntime")))
    with pytest.raises(
        BackendUnavailable,
        match=r"backend 'fake2' is unavailable: no onnxruntime \(pip install 'extra-x'\)",
    ):
        backends.get_backend("fake2", artifacts.load(toy[0]))


def test_missing_provider_is_not_silently_replaced(toy):
    with pytest.raises(
        BackendUnavailable,
        match=r"execution provider\(s\) \['CUDAExecutionProvider'\] are not in "
        r"this onnxruntime",
    ):
        OrtBackend(artifacts.load(toy[0]), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_auto_picks_an_available_backend_and_logs_once(toy, caplog):
    art = artifacts.load(toy[0])
    choose._logged_choices.clear()
    with caplog.at_level(logging.INFO, logger="restyle_rt"):
        b1 = backends.get_backend("auto", art)
        b2 = backends.get_backend("auto", art, threads=1)
    assert b1.name == b2.name and b1.name in backends.AUTO_ORDER
    assert b2.threads == 1
    assert sum("backend auto -> " in r.getMessage() for r in caplog.records) == 1


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Soak bounds: measured growth after warm-up was 0.27 MB over 400 inversions (batch 8, 5 steps, with steps)
# and <= 1.4 MB over 60 load/close cycles; the bounds leave room for allocator noise but catch a per-call
# leak.
SOAK_INVERT_MB = 4.0
SOAK_LOAD_MB = 8.0


def test_memory_soak(toy):
    x = _x(8)
    with Inverter.load(toy[0], backend="ort") as inv:
        for _ in range(20):
            inv.invert(x, n_iters=5, return_steps=True)
        gc.collect()
        base = _rss()
        for _ in range(300):
            inv.invert(x, n_iters=5, return_steps=True)
        gc.collect()
        grew = (_rss() - base) / 1e6
    assert grew < SOAK_INVERT_MB, f"RSS grew {grew:.2f} MB over 300 inversions"
    for _ in range(5):
        with Inverter.load(toy[0], backend="ort") as inv:
            inv.invert(x[:2], n_iters=1)
    gc.collect()
    base = _rss()
    for _ in range(40):
        with Inverter.load(toy[0], backend="ort") as inv:
            inv.invert(x[:2], n_iters=1)
    gc.collect()
    grew = (_rss() - base) / 1e6
    assert grew < SOAK_LOAD_MB, f"RSS grew {grew:.2f} MB over 40 load/close cycles"
