"""OrtBackend under onnxruntime-gpu's provider rules (tests/fakes/ort.py), played on the CPU build.

Covers what a user with ``pip install onnxruntime-gpu`` meets first: the TensorRT EP listed but unable to start
(no TensorRT libraries), and the TensorRT EP's engine cache directory. The providers' kernels are not run (no GPU).
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from fakes.ort import CPU, CUDA, TRT, GpuOrt  # noqa: E402

from restyle_rt import artifacts  # noqa: E402
from restyle_rt.errors import BackendUnavailable  # noqa: E402
from restyle_rt.runtime.backends import ort as ort_backend  # noqa: E402
from restyle_rt.runtime.backends.ort import OrtBackend  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture
def art_copy(toy, tmp_path):
    """A private copy of the toy artifacts (the TensorRT EP cache is created inside it)."""
    dst = tmp_path / "art"
    shutil.copytree(toy[0], dst)
    return dst


def test_default_providers_run_on_cuda_without_tensorrt_libs(art_copy, toy, monkeypatch, caplog):
    """onnxruntime-gpu lists the TensorRT EP, cannot start it, continues on CUDA: so does the backend."""
    gpu = GpuOrt(trt_libs=False).install(monkeypatch)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="restyle_rt"):
        with OrtBackend(artifacts.load(art_copy), threads=1) as be:
            assert be.providers == [CUDA, CPU] and be.device == "cuda" and be.io_binding
            res = be.run_loop(x, 3, return_steps=True)
    assert gpu.created == [[CUDA, CPU], [CUDA, CPU]]
    assert any("Failed to create TensorrtExecutionProvider" in m for m in gpu.log)
    assert "TensorrtExecutionProvider could not be initialised" in caplog.text
    assert "running on CUDAExecutionProvider" in caplog.text
    assert set(gpu.devices) == {("cuda", 0)}  # the loop's buffers asked for the GPU
    lats, imgs = toy[1].loop(x, 3)
    for t in range(3):
        np.testing.assert_allclose(res.step_latents[t], lats[t], atol=1e-5, rtol=0)
        np.testing.assert_allclose(res.step_images[t], imgs[t], atol=1e-5, rtol=0)


def test_named_providers_stay_strict(art_copy, monkeypatch):
    """A list the caller names is a requirement: a TensorRT EP that cannot start is refused, naming it."""
    GpuOrt(trt_libs=False).install(monkeypatch)
    with pytest.raises(BackendUnavailable, match="TensorrtExecutionProvider could not be initialised"):
        OrtBackend(artifacts.load(art_copy), providers=[TRT, CUDA, CPU], threads=1)


def test_default_providers_fall_back_to_cpu_with_a_warning(art_copy, monkeypatch, caplog):
    """Neither GPU provider can start (onnxruntime-gpu on a machine without CUDA libraries): host loop on CPU."""
    GpuOrt(trt_libs=False, cuda_libs=False).install(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="restyle_rt"):
        with OrtBackend(artifacts.load(art_copy), threads=1) as be:
            assert be.providers == [CPU] and be.device == "cpu" and not be.io_binding
    assert "running on CPUExecutionProvider" in caplog.text


def test_trt_ep_engine_cache_parent_is_created(art_copy, monkeypatch):
    """``engines/`` exists only after ``restyle-rt build``; the TensorRT EP creates one level and throws otherwise."""
    assert not (art_copy / "engines").exists()
    gpu = GpuOrt(trt_libs=True).install(monkeypatch)
    with OrtBackend(artifacts.load(art_copy), threads=1) as be:
        assert be.providers[0] == TRT
    assert gpu.created == [[TRT, CUDA, CPU], [TRT, CUDA, CPU]] and not any("EP Error" in m for m in gpu.log)
    assert (art_copy / "engines" / "ort-trt-cache").is_dir()


def test_trt_ep_cache_moves_to_the_user_cache_when_artifacts_are_read_only(art_copy, monkeypatch, tmp_path):
    """A read-only artifacts directory (a Triton repository): the cache goes under ``$RESTYLE_RT_CACHE``.

    The tests run as root, for whom a mode bit does not make a directory read-only: ``engines`` is a file here,
    so the directory cannot be made, as in a read-only tree.
    """
    (art_copy / "engines").write_text("not a directory")
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "cache"))
    gpu = GpuOrt(trt_libs=True).install(monkeypatch)
    art = artifacts.load(art_copy)
    path = ort_backend.trt_ep_cache_dir(art)
    assert path.is_dir() and path.parent == tmp_path / "cache" / "ort-trt"
    with OrtBackend(art, threads=1) as be:
        assert be.providers[0] == TRT
    assert not any("EP Error" in m for m in gpu.log)


def test_fake_has_teeth(art_copy, monkeypatch):
    """The fake refuses what onnxruntime-gpu refuses: a missing cache parent falls back without options."""
    gpu = GpuOrt(trt_libs=True).install(monkeypatch)
    import onnxruntime as ort

    opts = [{"trt_engine_cache_enable": True, "trt_engine_cache_path": str(art_copy / "no" / "such")}, {}, {}]
    sess = ort.InferenceSession(
        str(artifacts.load(art_copy).graph_path("synthesis")), providers=[TRT, CUDA, CPU], provider_options=opts
    )
    assert sess.get_providers() == [CUDA, CPU] and "EP Error" in gpu.log[-1]
    with pytest.raises(RuntimeError, match="unknown option"):
        gpu._create([CUDA], [{"no_such_option": 1}])
