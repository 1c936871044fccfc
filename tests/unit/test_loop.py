"""The host residual loop: maths per step, early exit with a compacted active set, chunking by profile."""

from __future__ import annotations

import numpy as np
import pytest

from restyle_rt import artifacts
from restyle_rt.errors import InputError
from restyle_rt.runtime.api import Inverter
from restyle_rt.runtime.backend import Backend
from restyle_rt.runtime.loop import check_batch, host_loop, latent_rms

pytestmark = pytest.mark.unit

# float32 graph arithmetic vs the float64 NumPy restatement (measured max-abs 6e-8 on the toy; 100x margin)
ATOL = 1e-5


class NumpyBackend(Backend):
    """A Backend running the toy's NumPy restatement; records the batch size of every call."""

    name = "numpy-test"

    def __init__(self, art, ref):
        super().__init__(art)
        self.ref, self.calls = ref, []

    @classmethod
    def available(cls):
        return True, ""

    def encode(self, image, feedback, latent):
        check_batch(self.artifacts.profile, image.shape[0], "numpy-test backend")
        self.calls.append(("encode", image.shape[0]))
        return self.ref.encode(image, feedback, latent)

    def synthesize(self, latent):
        self.calls.append(("synthesize", latent.shape[0]))
        return self.ref.synthesize(latent)


def _images(n, hw=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.1, 1.0, n, dtype=np.float32)[:, None, None, None]  # different distances to converge
    return (rng.uniform(-1, 1, (n, 3, *hw)).astype(np.float32) * scale).astype(np.float32)


@pytest.fixture
def np_backend(toy):
    d, ref = toy
    return NumpyBackend(artifacts.load(d), ref)


def test_loop_matches_restatement_every_step(np_backend, toy):
    _, ref = toy
    x = _images(5)
    res = host_loop(np_backend, x, 4, return_steps=True)
    lats, imgs = ref.loop(x, 4)
    assert len(res.step_latents) == len(res.step_images) == 4
    for t in range(4):
        np.testing.assert_allclose(res.step_latents[t], lats[t], atol=ATOL, rtol=0)
        np.testing.assert_allclose(res.step_images[t], imgs[t], atol=ATOL, rtol=0)
    assert res.latents.dtype == np.float32 and res.latents.shape == (5, 4, 512)
    np.testing.assert_array_equal(res.latents, res.step_latents[-1])
    np.testing.assert_array_equal(res.steps_used, [4] * 5)
    assert set(res.stages) == {"encoder", "synthesis", "copies"}


def test_first_step_starts_from_latent_avg_and_avg_feedback(np_backend, toy):
    _, ref = toy
    x = _images(2)
    art = np_backend.artifacts
    w0 = np.broadcast_to(art.latent_avg, (2, *art.latent_avg.shape))
    y0 = np.broadcast_to(art.avg_feedback, (2, *art.avg_feedback.shape))
    res = host_loop(np_backend, x, 1)
    np.testing.assert_allclose(res.latents, ref.encode(x, y0, w0), atol=ATOL, rtol=0)
    # the feedback really matters: a wrong y0 gives a different first step
    assert np.abs(ref.encode(x, np.zeros_like(y0), w0) - res.latents).max() > 100 * ATOL


def _expected_steps(ref, x, n, tau):
    lats, _ = ref.loop(x, n)
    prev = np.broadcast_to(ref.w.latent_avg, lats[0].shape)
    steps = np.full(x.shape[0], n)
    for t, w in enumerate(lats, start=1):
        d = latent_rms(w, prev)
        steps = np.where((steps == n) & (d < tau) & (t < n), t, steps)
        prev = w
    return steps, lats


def test_early_exit_freezes_and_compacts(np_backend, toy):
    _, ref = toy
    x, n = _images(6), 6
    full, lats = _expected_steps(ref, x, n, np.inf)
    rms = [latent_rms(lats[t], lats[t - 1]) for t in range(1, n)]
    tau = float(np.median(np.concatenate(rms)))  # a threshold that splits the images across steps
    expect, _ = _expected_steps(ref, x, n, tau)
    assert len(set(expect.tolist())) >= 2, "test needs images exiting at different steps"
    res = host_loop(np_backend, x, n, return_steps=True, early_exit=tau)
    np.testing.assert_array_equal(res.steps_used, expect)
    for i, s in enumerate(expect):
        np.testing.assert_allclose(res.latents[i], lats[s - 1][i], atol=ATOL, rtol=0)
        for t in range(s, n):  # frozen after its exit step
            np.testing.assert_array_equal(res.step_latents[t][i], res.step_latents[s - 1][i])
            np.testing.assert_array_equal(res.step_images[t][i], res.step_images[s - 1][i])
    enc_batches = [b for k, b in np_backend.calls if k == "encode"]
    assert enc_batches == [int((expect >= t).sum()) for t in range(1, n + 1) if (expect >= t).any()]
    assert sum(enc_batches) < 6 * n  # finished images cost nothing


def test_early_exit_zero_never_stops(np_backend):
    res = host_loop(np_backend, _images(3), 3, early_exit=0.0)
    np.testing.assert_array_equal(res.steps_used, [3, 3, 3])


@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"n_iters": 0}, r"n_iters must be a positive integer, got 0"),
        ({"n_iters": 2.5}, r"n_iters must be a positive integer"),
        ({"n_iters": 2, "early_exit": -1.0}, r"early_exit must be None or a finite threshold >= 0"),
        ({"n_iters": 2, "early_exit": float("nan")}, r"early_exit must be None or a finite threshold"),
    ],
)
def test_bad_loop_arguments(np_backend, kw, pattern):
    with pytest.raises(InputError, match=pattern):
        host_loop(np_backend, _images(1), **kw)


def test_bad_image_batches(np_backend):
    with pytest.raises(InputError, match=r"expected images \[B, 3, 16, 16\], got \[1, 3, 8, 8\]"):
        host_loop(np_backend, np.zeros((1, 3, 8, 8), np.float32), 1)
    with pytest.raises(InputError, match=r"expected float32 images in \[-1, 1\], got float64"):
        host_loop(np_backend, np.zeros((1, 3, 16, 16)), 1)
    with pytest.raises(InputError, match=r"batch 9 is outside the artifacts' batch profile \[min 1, opt 1, max 8\]"):
        host_loop(np_backend, _images(9), 1)


def _inverter(make_toy, profile):
    d, ref = make_toy("chunked", profile=profile)
    art = artifacts.load(d)
    return Inverter(art, NumpyBackend(art, ref)), ref


def test_chunking_by_profile_max(make_toy):
    inv, ref = _inverter(make_toy, (1, 2, 3))
    x = _images(7)
    res = inv.invert(x, n_iters=3, return_steps=True)
    lats, imgs = ref.loop(x, 3)
    assert [b for k, b in inv.backend.calls if k == "encode"] == [3, 3, 3, 3, 3, 3, 1, 1, 1]
    assert res.latents.shape == (7, 4, 512) and len(res.step_images) == 3
    np.testing.assert_allclose(res.latents, lats[-1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(res.step_images[1], imgs[1], atol=ATOL, rtol=0)


def test_short_tail_padded_to_profile_min(make_toy):
    inv, ref = _inverter(make_toy, (2, 2, 4))
    x = _images(5)
    res = inv.invert(x, n_iters=2)
    assert [b for k, b in inv.backend.calls if k == "encode"] == [4, 4, 2, 2]
    assert res.latents.shape[0] == 5 and res.steps_used.shape == (5,)
    np.testing.assert_allclose(res.latents, ref.loop(x, 2)[0][-1], atol=ATOL, rtol=0)
