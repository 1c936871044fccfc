"""Early exit against values computed by hand, not by the loop's own metric function.

A backend whose encoder moves each image halfway to a fixed target, ``w <- w + (target - w) / 2``, with
``target - latent_avg = a_i * P`` where ``P`` holds +-1 and +-3 in equal numbers, has the closed-form update size
``rms_t = |a_i| * sqrt(5) * 2**-t`` (mean |.| would be 2 |a_i| 2**-t, max 3 |a_i| 2**-t). The threshold below is
chosen so that an RMS, a mean-abs and a max-abs metric stop the images at different steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from restyle_rt import artifacts
from restyle_rt.runtime.backend import Backend
from restyle_rt.runtime.loop import host_loop

pytestmark = pytest.mark.unit
A = (1.0, 0.3, 0.05, 0.0)  # per-image target offsets a_i (the last one never moves: rms 0 < tau at step 1)
N = 8


def _pattern(s):
    p = np.tile(np.array([1.0, -3.0, -1.0, 3.0], np.float32), s * 512 // 4).reshape(s, 512)
    return p


class HalfwayBackend(Backend):
    name = "halfway-test"

    @classmethod
    def available(cls):
        return True, ""

    def encode(self, image, feedback, latent):
        a = image[:, 0, 0, 0].astype(np.float64)[:, None, None]  # a_i, carried by the image
        target = self.artifacts.latent_avg[None].astype(np.float64) + a * _pattern(latent.shape[1])
        return (latent + 0.5 * (target - latent)).astype(np.float32)

    def synthesize(self, latent):
        b = latent.shape[0]
        ih, iw = self.artifacts.spec.image_hw
        img = np.broadcast_to(latent[:, :1, :1, None], (b, 3, ih, iw)).astype(np.float32)
        fb = np.zeros((b, 3, *self.artifacts.spec.input_hw), np.float32)
        return img, fb


def _expected_step(a, tau):
    """First t in 1..N with |a| sqrt(5) 2^-t < tau (closed form), else N."""
    for t in range(1, N + 1):
        if abs(a) * math.sqrt(5.0) * 2.0**-t < tau:
            return t
    return N


@pytest.fixture
def backend(toy):
    d, _ = toy
    return HalfwayBackend(artifacts.load(d))


def _images(art):
    h, w = art.spec.input_hw
    return np.stack([np.full((3, h, w), a, np.float32) for a in A])


def test_steps_used_match_the_closed_form(backend):
    tau = 0.1
    res = host_loop(backend, _images(backend.artifacts), N, return_steps=True, early_exit=tau)
    expect = [_expected_step(a, tau) for a in A]
    assert expect == [5, 3, 1, 1]  # hand check: 1*2.236/32 = 0.070 < 0.1 at t=5; 0.3*2.236/8 = 0.084 at t=3
    # max-abs (3|a|2^-t) would give [5, 4, 1, 1] and an un-rooted mean square [3, 2, 1, 1]; tau=0.08 below
    # separates RMS [5, 4, 1, 1] from mean-abs [5, 3, 1, 1] and max-abs [6, 4, 1, 1]
    assert res.steps_used.tolist() == expect
    la = backend.artifacts.latent_avg.astype(np.float64)
    for i, (a, s) in enumerate(zip(A, expect)):  # frozen at the closed-form latent of its exit step
        want = la + a * (1 - 2.0**-s) * _pattern(la.shape[0])
        np.testing.assert_allclose(res.latents[i], want, rtol=0, atol=1e-5)
        # and its image is the one synthesised at that step (scattered back after the active set was compacted)
        np.testing.assert_allclose(res.images[i], np.float32(want[0, 0]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("tau,expect", [(0.08, [5, 4, 1, 1]), (0.05, [6, 4, 2, 1]), (0.0, [N, N, N, N])])
def test_thresholds_separate_rms_from_other_norms(backend, tau, expect):
    assert [_expected_step(a, tau) for a in A] == expect
    res = host_loop(backend, _images(backend.artifacts), N, early_exit=tau)
    assert res.steps_used.tolist() == expect
