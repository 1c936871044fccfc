"""Warm start of the host loop (``host_loop(..., start=(w, y))``, what ``restyle-rt video`` runs per frame): the
same recursion as the cold loop, only from a given state.

Checked three ways on the toy (ONNX Runtime, the real backend): against the cold loop's own later steps (run m
steps, continue n more from the state after m: the same n steps), against the NumPy restatement run from the same
state, and from the loop seeds (the default, unchanged).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from restyle_rt import artifacts
from restyle_rt.errors import InputError
from restyle_rt.runtime.backends.ort import OrtBackend
from restyle_rt.runtime.loop import host_loop

pytestmark = pytest.mark.unit

ATOL = 1e-5  # float32 graphs vs the float64 restatement (as tests/unit/test_loop.py; measured 6e-8)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.8, 0.8, (n, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def ort_toy(toy):
    d, ref = toy
    with OrtBackend(artifacts.load(d), threads=1) as be:
        yield be, ref


@pytest.mark.parametrize("m,n", [(1, 3), (3, 2), (2, 1)])
def test_warm_loop_is_the_cold_loop_continued(ort_toy, m, n):
    """Cold m + n steps == cold m steps, then n steps warm-started from (latents, feedback) after step m; per step,
    bit for bit (the same graphs on the same inputs)."""
    be, _ = ort_toy
    x = _images(3)
    cold = host_loop(be, x, m + n, return_steps=True)
    first = host_loop(be, x, m)
    warm = host_loop(be, x, n, return_steps=True, start=(first.latents, first.feedback))
    for t in range(n):
        np.testing.assert_array_equal(warm.step_latents[t], cold.step_latents[m + t])
        np.testing.assert_array_equal(warm.step_images[t], cold.step_images[m + t])
    np.testing.assert_array_equal(warm.feedback, cold.feedback)
    np.testing.assert_array_equal(warm.steps_used, [n] * 3)


def test_warm_loop_matches_the_restatement_from_the_same_state(ort_toy):
    """From an arbitrary state (not one the loop visited), per step, against the NumPy recursion."""
    be, ref = ort_toy
    rng = np.random.default_rng(5)
    x = _images(2, seed=1)
    w = (be.artifacts.latent_avg[None] + rng.normal(0, 0.05, (2, 4, 512))).astype(np.float32)
    y = rng.uniform(-0.5, 0.5, (2, 3, 16, 16)).astype(np.float32)
    res = host_loop(be, x, 3, return_steps=True, start=(w, y))
    for t in range(3):
        w = ref.encode(x, y, w)
        img, y = ref.synthesize(w)
        np.testing.assert_allclose(res.step_latents[t], w, atol=ATOL, rtol=0)
        np.testing.assert_allclose(res.step_images[t], img, atol=ATOL, rtol=0)
    np.testing.assert_allclose(res.feedback, y, atol=ATOL, rtol=0)


def test_start_from_the_seeds_is_the_default(ort_toy):
    be, _ = ort_toy
    art, x = be.artifacts, _images(2)
    cold = host_loop(be, x, 2, return_steps=True)
    seeded = host_loop(be, x, 2, return_steps=True, start=(art.latent_avg[None], art.avg_feedback[None]))
    for a, b in zip(cold.step_latents + [cold.feedback], seeded.step_latents + [seeded.feedback]):
        np.testing.assert_array_equal(a, b)


def test_the_start_state_is_not_written(ort_toy):
    be, _ = ort_toy
    w = np.repeat(be.artifacts.latent_avg[None], 2, axis=0)
    y = np.repeat(be.artifacts.avg_feedback[None], 2, axis=0)
    w0, y0 = w.copy(), y.copy()
    host_loop(be, _images(2), 2, start=(w, y))
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(y, y0)


def test_feedback_of_images_that_exited_early(ort_toy):
    """With early exit the active set is compacted; the returned feedback is still each image's own last one
    (G(final latent)), so a warm start continues from the right state."""
    be, ref = ort_toy
    x = _images(4, seed=2) * np.linspace(0.05, 1.0, 4, dtype=np.float32)[:, None, None, None]
    res = host_loop(be, x, 6, early_exit=1e-3)
    assert len(set(res.steps_used.tolist())) > 1, res.steps_used  # some exited before others
    np.testing.assert_allclose(res.feedback, ref.synthesize(res.latents)[1], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "bad,msg",
    [
        (lambda w, y: (w.astype(np.float64), y), "start latents: expected float32"),
        (lambda w, y: (w[:, :2], y), "start latents: expected float32 [2 or 1, 4, 512]"),
        (lambda w, y: (w, y[:, :, :8]), "start feedback: expected float32 [2 or 1, 3, 16, 16]"),
        (lambda w, y: (np.concatenate([w, w, w]), y), "got float32 [6, 4, 512]"),
        (lambda w, y: (w * np.nan, y), "start latents: non-finite"),
        (lambda w, y: (w, y, y), "start must be a (latents, feedback) pair"),
    ],
)
def test_bad_start_states_are_refused(ort_toy, bad, msg):
    be, _ = ort_toy
    w = np.repeat(be.artifacts.latent_avg[None], 2, axis=0)
    y = np.repeat(be.artifacts.avg_feedback[None], 2, axis=0)
    with pytest.raises(InputError, match=re.escape(msg)):
        host_loop(be, _images(2), 1, start=bad(w, y))
