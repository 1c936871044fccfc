"""OrtBackend's CUDA/TensorRT-EP IOBinding loop with the device name it would use on a GPU, served on the CPU.

The GPU providers are absent here, so the loop runs with ``device = "cuda"`` while OrtValue's factories are
redirected to the CPU: this checks that every OrtValue the loop creates asks for the GPU device and id, that
nothing comes back to the host per step unless ``return_steps`` asks, and that the numbers match the host loop. It
does not check ONNX Runtime's CUDA or TensorRT providers themselves (no GPU).
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from restyle_rt import artifacts  # noqa: E402
from restyle_rt.runtime.backends.ort import OrtBackend  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture
def on_fake_cuda(monkeypatch):
    """Redirect OrtValue device allocations to the CPU; record the devices asked for and host reads."""
    seen = {"devices": [], "reads": 0}
    OV = ort.OrtValue
    from_numpy, from_shape, numpy = OV.ortvalue_from_numpy, OV.ortvalue_from_shape_and_type, OV.numpy

    def fake_from_numpy(arr, device_type="cpu", device_id=0, *a, **kw):
        seen["devices"].append((device_type, device_id))
        return from_numpy(arr, "cpu", 0)

    def fake_from_shape(shape, element_type, device_type="cpu", device_id=0, *a, **kw):
        seen["devices"].append((device_type, device_id))
        return from_shape(shape, element_type, "cpu", 0)

    def counting_numpy(self):
        seen["reads"] += 1
        return numpy(self)

    monkeypatch.setattr(OV, "ortvalue_from_numpy", staticmethod(fake_from_numpy))
    monkeypatch.setattr(OV, "ortvalue_from_shape_and_type", staticmethod(fake_from_shape))
    monkeypatch.setattr(OV, "numpy", counting_numpy)
    return seen


@pytest.mark.parametrize("return_steps", [False, True])
def test_bound_loop_stays_on_the_device(toy, on_fake_cuda, return_steps):
    root, ref = toy
    art = artifacts.load(root)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, *art.spec.input_hw)).astype(np.float32)
    n = 3
    with OrtBackend(art, io_binding=True, device_id=1, threads=1) as be:
        be.device = "cuda"  # what a CUDA/TensorRT provider sets
        res = be.run_loop(x, n, return_steps=return_steps)
    assert on_fake_cuda["devices"] and set(on_fake_cuda["devices"]) == {("cuda", 1)}
    assert on_fake_cuda["reads"] == 2 + (2 * n if return_steps else 0)
    lats, imgs = ref.loop(x, n)
    np.testing.assert_allclose(res.latents, lats[-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.images, imgs[-1], rtol=1e-5, atol=1e-5)
    if return_steps:
        for t in range(n):
            np.testing.assert_allclose(res.step_latents[t], lats[t], rtol=1e-5, atol=1e-5)


def test_bound_loop_leaves_the_seeds_alone(toy):
    """At batch 1 the IOBinding loop's seed buffers were views of the artifacts' latent_avg / avg_feedback, which a
    CPU OrtValue shares and the ping-pong overwrote: the next call started from wrong seeds (found by the H200 run's
    CPU dry run)."""
    art = artifacts.load(toy[0])
    seeds = art.latent_avg.copy(), art.avg_feedback.copy()
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, *art.spec.input_hw)).astype(np.float32)
    with OrtBackend(art, io_binding=True, threads=1) as be:
        first = be.run_loop(x, 3).latents
        np.testing.assert_array_equal(art.latent_avg, seeds[0])
        np.testing.assert_array_equal(art.avg_feedback, seeds[1])
        np.testing.assert_array_equal(be.run_loop(x, 3).latents, first)
    lats, _ = toy[1].loop(x, 3)
    np.testing.assert_allclose(first, lats[-1], rtol=1e-5, atol=1e-5)
