"""The fused-op references agree with each other and with the official formulation (CPU, FP32)."""

import numpy as np
import pytest
import torch
from kernel_cases import LAYER_KINDS, make_layer, tolerance

from restyle_rt.kernels import reference as R

TOL = tolerance("formulations", "fp32")


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _run(impl, x, s, w, b, n, kind):
    _, _, up, demod, act = kind
    t = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    return R.styled_conv(t(x), t(s), t(w), t(b), t(n), demodulate=demod, upsample=up, activate=act, impl=impl).numpy()


@pytest.mark.parametrize("size", [(12, 10, 7, 9), (512, 512, 4, 4)], ids=["small", "c512"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", LAYER_KINDS, ids=[k[0] for k in LAYER_KINDS])
def test_formulations_agree(kind, batch, size):
    cin, cout, h, w_ = size
    x, s, w, b, n = make_layer(kind, batch, cin=cin, cout=cout, h=h, w=w_, seed=batch)
    up = 2 if kind[2] else 1
    numpy_ref = R.styled_conv_np(x, s, w, b, n, kind[3], kind[2], kind[4])  # float64 inside
    assert numpy_ref.shape == (batch, cout, h * up, w_ * up)
    errors = {impl: rel_l2(_run(impl, x, s, w, b, n, kind), numpy_ref) for impl in ("grouped", "ref", "phase")}
    assert max(errors.values()) < TOL, errors


def test_to_rgb_is_the_1x1_layer():
    kind = LAYER_KINDS[2]
    x, s, w, b, _ = make_layer(kind, 2, cin=16, cout=3, h=8)
    got = R.to_rgb(
        torch.from_numpy(x), torch.from_numpy(s), torch.from_numpy(w), torch.from_numpy(b).reshape(1, 3, 1, 1)
    )
    want = np.einsum("bihw,oi->bohw", x * s[:, :, None, None], w[:, :, 0, 0] / np.sqrt(16)) + b.reshape(1, 3, 1, 1)
    assert rel_l2(got.numpy(), want) < TOL


def test_demodulation_cancels_style_scale():
    kind = LAYER_KINDS[0]
    x, s, w, b, n = make_layer(kind, 2, cin=8, cout=6, h=6)
    a = _run("ref", x, s, w, b, n, kind)
    c = _run("ref", x, s * 7.0, w, b, n, kind)
    assert rel_l2(c, a) < TOL


def test_demod_coefficients_match_direct_sum():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    s = rng.standard_normal((2, 4)).astype(np.float32)
    wp = w / np.sqrt(4 * 9)
    direct = 1.0 / np.sqrt(((wp[None] * s[:, None, :, None, None]) ** 2).sum(axis=(2, 3, 4)) + 1e-8)
    got = R.demod_coefficients(torch.from_numpy(w), torch.from_numpy(s)).numpy()
    assert got.dtype == np.float32 and rel_l2(got, direct) < TOL


def test_phase_weights_equal_composed_6x6_kernel():
    # Independent construction: C = full 2-D convolution of W with the 4x4 blur (taps dy, dx in [-2, 3]), then
    # P[py, px, ty, tx] = C[py+2-2ty, px+2-2tx] (upsample_phase_weights docstring).
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, 3, 3, 3))
    k = R.blur_kernel_2d()  # = outer(k1, k1), k1 = [1,3,3,1]/4
    np.testing.assert_allclose(k, np.outer(R.BLUR_1D, R.BLUR_1D))
    c = np.zeros((2, 3, 6, 6))  # index dy+2
    for a in range(4):
        for bb in range(4):
            for j in range(3):
                for i in range(3):
                    c[:, :, j - a + 1 + 2, i - bb + 1 + 2] += k[a, bb] * w[:, :, j, i]
    p = R.upsample_phase_weights(w)
    for py in range(2):
        for px in range(2):
            for ty in range(3):
                for tx in range(3):
                    np.testing.assert_allclose(
                        p[:, :, py, px, ty, tx], c[:, :, py + 4 - 2 * ty, px + 4 - 2 * tx], rtol=0, atol=1e-12
                    )


@pytest.mark.parametrize("noise", ["scalar", None])
def test_noise_variants(noise):
    kind = LAYER_KINDS[1]
    x, s, w, b, n = make_layer(kind, 2, cin=6, cout=4, h=5, noise=noise)
    assert rel_l2(_run("ref", x, s, w, b, n, kind), _run("grouped", x, s, w, b, n, kind)) < TOL


def test_plugin_node_reference_attrs_and_dtype():
    kind = LAYER_KINDS[1]
    x, s, w, b, n = make_layer(kind, 1, cin=4, cout=4, h=4)
    attrs = dict(demodulate=1, upsample=1, activate=1, kernel_size=3)
    out = R.PLUGIN_REFS["ModulatedConv2d"]([x.astype(np.float16), s, w, b, n], attrs)
    assert out.dtype == np.float16 and out.shape == (1, 4, 8, 8)
    assert rel_l2(out, _run("grouped", x, s, w, b, n, kind)) < tolerance("cuda", "fp16")
    with pytest.raises(ValueError, match="kernel_size"):
        R.PLUGIN_REFS["ModulatedConv2d"]([x, s, w, b, n], dict(attrs, kernel_size=1))
