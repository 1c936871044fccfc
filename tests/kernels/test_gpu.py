"""Fused CUDA kernel vs the float64 NumPy reference (needs a CUDA device; skipped cleanly without one).

Not executed in CI (no GPU there); run on an H100 on 2026-11-22, all passed (benchmarks/gpu/README.md). Sizes are
chosen to hit partial tiles (H, W not multiples of 8x16), Cout not a multiple of the channel tile, Cin not a multiple
of the Cin chunk (8), and every noise mode.
"""

import numpy as np
import pytest
from kernel_cases import LAYER_KINDS, make_layer, tolerance

from restyle_rt.kernels import reference as R
from restyle_rt.kernels import runner

pytestmark = pytest.mark.gpu

SIZES = [(13, 37, 5, 19), (64, 3, 8, 8), (512, 512, 4, 4)]  # (Cin, Cout, H, W)


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check(kind, batch, size, dtype, noise="full"):
    cin, cout, h, w = size
    x, s, wt, b, n = make_layer(kind, batch, cin, cout, h, w, seed=batch + cin, noise=noise)
    _, _, up, demod, act = kind
    x = x.astype(dtype)
    got = runner.modulated_conv(x, s, wt, b, n, demodulate=demod, upsample=up, activate=act)
    want = R.styled_conv_np(x, s, wt, b, n, demod, up, act)
    assert got.dtype == dtype and got.shape == want.shape
    return rel_l2(got, want)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", LAYER_KINDS, ids=[k[0] for k in LAYER_KINDS])
def test_fp32_matches_reference(cuda_device, kind, batch, size):
    assert _check(kind, batch, size, np.float32) < tolerance("cuda", "fp32")


@pytest.mark.parametrize("kind", LAYER_KINDS, ids=[k[0] for k in LAYER_KINDS])
def test_fp16_matches_reference(cuda_device, kind, record_property):
    err = max(_check(kind, b, size, np.float16) for b in (1, 3) for size in SIZES)
    record_property("fp16_rel_l2", err)  # measured value lands in the junit report
    assert err < tolerance("cuda", "fp16")


@pytest.mark.parametrize("noise", ["scalar", None])
def test_noise_modes(cuda_device, noise):
    assert _check(LAYER_KINDS[1], 2, SIZES[0], np.float32, noise=noise) < tolerance("cuda", "fp32")


@pytest.mark.parametrize("cin,cout", [(4096, 3), (4097, 3), (12288, 4)])
def test_1x1_small_cout_beyond_default_shared_memory(cuda_device, cin, cout):
    # Defect 10 on a GPU: Cin past the 48 KiB dynamic shared-memory budget of the small-Cout path (tiled fallback).
    assert _check(LAYER_KINDS[2], 1, (cin, cout, 3, 5), np.float32, noise="scalar") < tolerance("cuda", "fp32")
