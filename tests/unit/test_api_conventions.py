"""Python API conventions: ``LoopResult.to_uint8()`` / ``save(dir)``, the thread-safety note, ORT providers as
``(name, options)`` tuples, and the OpenVINO backend's ``device``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from restyle_rt import Inverter, artifacts, fsio
from restyle_rt.errors import BackendUnavailable, InputError
from restyle_rt.runtime import io
from restyle_rt.runtime.backend import LoopResult

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


# --- results ----------------------------------------------------------------------------------------------------


def test_to_uint8_is_the_official_tensor2im():
    values = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0], np.float32)
    images = np.tile(values[None, None, None, :], (2, 3, 1, 1))  # [B=2, 3, h=1, w=6]
    res = LoopResult(latents=np.zeros((2, 4, 512), np.float32), images=images, steps_used=np.array([1, 1]))
    got = res.to_uint8()
    assert got.dtype == np.uint8 and got.shape == (2, 1, 6, 3)
    assert got[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]  # clip, x255, truncate (not round)


def test_invert_result_to_uint8_and_save(toy, rgb_images, tmp_path, monkeypatch):
    paths = rgb_images(2)
    with Inverter.load(toy[0]) as inv:
        res = inv.invert(paths, n_iters=3, return_steps=True)
    u8 = res.to_uint8()
    assert u8.shape == (2, 24, 24, 3)
    for i in range(2):
        np.testing.assert_array_equal(u8[i], io.to_uint8(res.images[i]))
    renamed = []
    real = fsio._replace
    monkeypatch.setattr(fsio, "_replace", lambda src, dst: (renamed.append(Path(dst)), real(src, dst)))
    out = tmp_path / "out"
    written = res.save(out, names=["a", "sub/b"])
    assert sorted(written) == sorted(renamed)  # every file through the atomic writer
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "a.png",
        "latents.npy",
        "step_latents.npy",
        "sub/b.png",
    ]
    np.testing.assert_array_equal(_decode(out / "a.png"), u8[0])
    np.testing.assert_array_equal(_decode(out / "sub" / "b.png"), u8[1])
    np.testing.assert_array_equal(np.load(out / "latents.npy"), res.latents)
    steps = np.load(out / "step_latents.npy")
    assert steps.shape == (2, 3, 4, 512)
    np.testing.assert_array_equal(steps[:, 1], res.step_latents[1])
    assert not [p for p in out.rglob("*") if p.name.startswith(fsio.TMP_PREFIX)]


def test_save_default_names_and_refusals(toy, rgb_images, tmp_path):
    with Inverter.load(toy[0]) as inv:
        res = inv.invert(rgb_images(2), n_iters=1)
    res.save(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["000.png", "001.png", "latents.npy"]
    for names in (["only-one"], ["x", "x"], ["ok", "../escape"], ["ok", "/abs"]):
        with pytest.raises(InputError):
            res.save(tmp_path / "e", names=names)
    assert not (tmp_path / "e").exists()


def test_thread_safety_is_documented():
    assert "one Inverter per" in " ".join(Inverter.__doc__.split())
    assert "one `Inverter` per thread" in (ROOT / "README.md").read_text()


# --- ORT providers as (name, options) -----------------------------------------------------------------------------


@pytest.fixture
def art_copy(toy, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(toy[0], dst)
    return dst


def _spy_options(monkeypatch):
    """Record the provider options every InferenceSession is created with."""
    import onnxruntime as ort

    seen, cls = [], ort.InferenceSession

    def session(path, sess_options=None, providers=None, provider_options=None, **kw):
        seen.append(dict(zip(providers, provider_options)))
        return cls(path, sess_options=sess_options, providers=providers, provider_options=provider_options, **kw)

    monkeypatch.setattr(ort, "InferenceSession", session)
    return seen


def test_cpu_provider_as_a_tuple(art_copy, monkeypatch):
    from restyle_rt.runtime.backends.ort import OrtBackend

    seen = _spy_options(monkeypatch)
    with OrtBackend(artifacts.load(art_copy), providers=[("CPUExecutionProvider", {})], threads=1) as be:
        assert be.providers == ["CPUExecutionProvider"]
    assert seen == [{"CPUExecutionProvider": {}}] * 2


def test_tuple_options_merge_over_the_backends(art_copy, toy, monkeypatch):
    pytest.importorskip("onnxruntime")
    from fakes.ort import CPU, CUDA, TRT, GpuOrt

    from restyle_rt.runtime.backends.ort import OrtBackend

    gpu = GpuOrt(trt_libs=True).install(monkeypatch)
    seen = _spy_options(monkeypatch)
    providers = [
        (TRT, {"trt_fp16_enable": True, "trt_engine_cache_enable": False}),
        (CUDA, {"device_id": 1, "gpu_mem_limit": 1 << 30}),
        CPU,
    ]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    with OrtBackend(artifacts.load(art_copy), providers=providers, threads=1) as be:
        assert be.providers[0] == TRT and be.device_id == 1
        res = be.run_loop(x, 2)
    trt, cuda = seen[0][TRT], seen[0][CUDA]
    assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_enable"] is False  # the caller's win
    assert "image:8x3x16x16" in trt["trt_profile_max_shapes"] and trt["device_id"] == 1  # the backend's stay
    assert cuda == {"device_id": 1, "gpu_mem_limit": 1 << 30} and seen[0][CPU] == {}
    assert set(gpu.devices) == {("cuda", 1)}  # the loop's buffers follow the options' device_id
    np.testing.assert_allclose(res.latents, toy[1].loop(x, 2)[0][-1], atol=1e-5, rtol=0)


def test_tuple_providers_stay_strict_and_validated(art_copy, monkeypatch):
    from fakes.ort import CPU, CUDA, TRT, GpuOrt

    from restyle_rt.runtime.backends.ort import OrtBackend

    art = artifacts.load(art_copy)
    with pytest.raises(BackendUnavailable, match="NoSuchExecutionProvider"):
        OrtBackend(art, providers=[("NoSuchExecutionProvider", {}), CPU], threads=1)
    for bad in ([("CPUExecutionProvider",)], [("CPUExecutionProvider", "threads=1")], [CPU, (CPU, {})], [3]):
        with pytest.raises(InputError):
            OrtBackend(art, providers=bad, threads=1)
    GpuOrt(trt_libs=False).install(monkeypatch)
    with pytest.raises(BackendUnavailable, match="TensorrtExecutionProvider could not be initialised"):
        OrtBackend(art, providers=[(TRT, {"trt_fp16_enable": True}), CUDA, CPU], threads=1)
    with pytest.raises(InputError, match="different device_id"):
        OrtBackend(art, providers=[(TRT, {"device_id": 0}), (CUDA, {"device_id": 1}), CPU], threads=1)


# --- OpenVINO device ----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_devices(monkeypatch):
    """OpenVINO reporting ``CPU, GPU.0, GPU.1``; a model compiled for a GPU runs on the CPU, and each compile's
    device and config are recorded."""
    ov = pytest.importorskip("openvino")
    real = ov.Core
    compiled = []

    class Core:
        available_devices = ["CPU", "GPU.0", "GPU.1"]

        def __init__(self):
            self._core = real()

        def compile_model(self, model, device, config):
            compiled.append((device, dict(config)))
            return self._core.compile_model(
                model, "CPU", {k: v for k, v in config.items() if k != "INFERENCE_NUM_THREADS" or device == "CPU"}
            )

        def __getattr__(self, name):
            return getattr(self._core, name)

    monkeypatch.setattr(ov, "Core", Core)
    return compiled


def test_openvino_device_default_cpu_and_named_gpu(toy, fake_devices, tmp_path):
    from restyle_rt.runtime.backends.openvino import OpenVinoBackend

    art = artifacts.load(toy[0])
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    with OpenVinoBackend(art, precision="fp32", threads=1, cache_dir="") as be:
        assert be.device == "CPU"
    assert [d for d, _ in fake_devices] == ["CPU", "CPU"] and fake_devices[0][1]["INFERENCE_NUM_THREADS"] == 1
    fake_devices.clear()
    with OpenVinoBackend(art, precision="auto", threads=1, cache_dir="", device="GPU.1") as be:
        assert be.device == "GPU.1" and be.precision == "fp32"  # auto: the CPU's bf16 is not considered
        res = be.run_loop(x, 2)
    assert [d for d, _ in fake_devices] == ["GPU.1", "GPU.1"]
    assert all("INFERENCE_NUM_THREADS" not in c and c["INFERENCE_PRECISION_HINT"] == "f32" for _, c in fake_devices)
    np.testing.assert_allclose(res.latents, toy[1].loop(x, 2)[0][-1], atol=1e-4, rtol=0)
    with OpenVinoBackend(art, precision="fp32", threads=1, cache_dir="", device="GPU") as be:
        assert be.device == "GPU"


def test_openvino_device_refusals_name_the_available_ones(toy, fake_devices):
    from restyle_rt.runtime.backends.openvino import OpenVinoBackend

    art = artifacts.load(toy[0])
    with pytest.raises(BackendUnavailable, match=r"'NPU' is not available here \(OpenVINO sees CPU, GPU.0, GPU.1\)"):
        OpenVinoBackend(art, precision="fp32", cache_dir="", device="NPU")
    with pytest.raises(BackendUnavailable, match="'GPU.2' is not available"):
        OpenVinoBackend(art, precision="fp32", cache_dir="", device="GPU.2")
    with pytest.raises(InputError, match="unknown device 'TPU'.*available here: CPU, GPU.0, GPU.1"):
        OpenVinoBackend(art, precision="fp32", cache_dir="", device="TPU")
    with pytest.raises(InputError, match="'bf16' runs on the CPU device only"):
        OpenVinoBackend(art, precision="bf16", cache_dir="", device="GPU.0")
    assert fake_devices == []  # refused before anything compiled


def test_openvino_device_through_inverter_load(toy, fake_devices):
    with Inverter.load(toy[0], backend="openvino", precision="fp32", device="GPU.0", cache_dir="") as inv:
        assert inv.backend.device == "GPU.0"
