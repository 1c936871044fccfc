"""restyle_rt.metrics (NumPy PSNR, SSIM, MS-SSIM) against references: scikit-image's structural_similarity and
peak_signal_noise_ratio (when installed), an MS-SSIM written out in torch here (when installed), and closed forms
(identical images, constant images, a constant shift)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from restyle_rt import metrics

pytestmark = pytest.mark.unit

SHAPES = [(16, 16, 3), (37, 53, 3), (64, 64), (200, 180, 3)]


def _pair(shape, seed=0, noise=40):
    r = np.random.default_rng(seed)
    a = r.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a.astype(np.int64) + r.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def _smooth_pair(shape, seed=1):
    """Images with structure at several scales (a blurred random field), so the coarse MS-SSIM scales matter."""
    r = np.random.default_rng(seed)
    base = r.normal(size=shape)
    for axis in (0, 1):
        base = sum(np.roll(base, k, axis=axis) for k in range(-3, 4)) / 7.0
    a = np.clip(128 + 60 * base / base.std(), 0, 255).astype(np.uint8)
    b = np.clip(a.astype(np.int64) + r.integers(-25, 26, shape), 0, 255).astype(np.uint8)
    return a, b


@pytest.mark.parametrize("shape", SHAPES)
def test_ssim_and_psnr_match_scikit_image(shape):
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image not installed")
    for a, b in (_pair(shape), _smooth_pair(shape)):
        ref = skm.structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1 if len(shape) == 3 else None,
        )
        assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-12)
        assert metrics.psnr(a, b) == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=255), abs=1e-12)


def _torch_ms_ssim(a: np.ndarray, b: np.ndarray, scales: int) -> float:
    """MS-SSIM written out in torch (conv2d with the 11x11 Gaussian, valid; avg_pool2d 2x2; relu; per channel)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.tensor(a, dtype=torch.float64).reshape(*a.shape[:2], -1).permute(2, 0, 1)[:, None]  # [C, 1, h, w]
    y = torch.tensor(b, dtype=torch.float64).reshape(*b.shape[:2], -1).permute(2, 0, 1)[:, None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]  # [1, 1, 11, 11]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=torch.float64)[:scales]
    w = w / w.sum()
    vals = []
    for j in range(scales):
        mx, my = F.conv2d(x, win), F.conv2d(y, win)
        sxx = F.conv2d(x * x, win) - mx**2
        syy = F.conv2d(y * y, win) - my**2
        sxy = F.conv2d(x * y, win) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        s = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs
        vals.append((s if j == scales - 1 else cs).mean(dim=(1, 2, 3)))  # [C]
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    t = torch.relu(torch.stack(vals))  # [scales, C]
    return float(torch.prod(t ** w[:, None], dim=0).mean())


@pytest.mark.parametrize("shape", SHAPES)
def test_ms_ssim_matches_a_torch_reference(shape):
    m = metrics.ms_ssim_scales(shape[:2])
    for a, b in (_pair(shape), _smooth_pair(shape)):
        assert metrics.ms_ssim(a, b) == pytest.approx(_torch_ms_ssim(a, b, m), abs=1e-12)


def test_scales_that_fit():
    assert metrics.ms_ssim_scales((10, 100)) == 0
    assert metrics.ms_ssim_scales((16, 16)) == 1
    assert metrics.ms_ssim_scales((21, 30)) == 1
    assert metrics.ms_ssim_scales((22, 30)) == 2
    assert metrics.ms_ssim_scales((175, 400)) == 4
    assert metrics.ms_ssim_scales((176, 176)) == 5
    assert metrics.ms_ssim_scales((1024, 1024)) == 5  # never more than the five standard weights


def test_one_scale_ms_ssim_is_ssim_and_more_scales_differ():
    a, b = _smooth_pair((16, 16, 3))
    assert metrics.ms_ssim(a, b) == metrics.ssim(a, b)
    a, b = _smooth_pair((200, 180, 3))
    assert metrics.ms_ssim(a, b, scales=1) == pytest.approx(metrics.ssim(a, b), abs=1e-15)
    assert abs(metrics.ms_ssim(a, b) - metrics.ssim(a, b)) > 1e-3


@pytest.mark.parametrize("shape", [(16, 16, 3), (200, 180, 3), (40, 40)])
def test_identical_images(shape):
    a, _ = _pair(shape)
    assert metrics.psnr(a, a) == math.inf
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("c,d", [(100, 10), (40, 60), (200, -50)])
def test_constant_images_closed_form(c, d):
    """Constant images c and c + d: zero variances, so SSIM is the luminance term (2 c (c+d) + C1) / (c^2 + (c+d)^2
    + C1) exactly, MS-SSIM (pooling keeps constants; cs = 1) the same, and PSNR 10 log10(255^2 / d^2)."""
    a = np.full((48, 40, 3), c, np.uint8)
    b = np.full((48, 40, 3), c + d, np.uint8)
    c1 = (0.01 * 255) ** 2
    lum = (2 * c * (c + d) + c1) / (c * c + (c + d) ** 2 + c1)
    assert metrics.ssim(a, b) == pytest.approx(lum, rel=1e-12)
    assert metrics.ms_ssim(a, b) == pytest.approx(
        lum ** (metrics.MS_SSIM_WEIGHTS[1] / sum(metrics.MS_SSIM_WEIGHTS[:2])), rel=1e-12
    )  # 48x40: 2 scales; only the last scale's SSIM has luminance
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / d**2), rel=1e-12)


def test_constant_shift_keeps_structure():
    """A constant shift with no clipping leaves the contrast-structure term at 1: SSIM < 1 only by luminance, and
    closer to 1 the smaller the shift; PSNR is the shift's."""
    r = np.random.default_rng(3)
    a = r.integers(60, 190, (32, 32, 3)).astype(np.uint8)
    small, big = (a + 5).astype(np.uint8), (a + 50).astype(np.uint8)
    assert 0.99 < metrics.ssim(a, small) < 1.0
    assert metrics.ssim(a, big) < metrics.ssim(a, small)
    assert metrics.psnr(a, small) == pytest.approx(10 * math.log10(255**2 / 25), rel=1e-12)


def test_symmetry_and_range():
    a, b = _pair((30, 30, 3), noise=120)
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a), abs=1e-15)
    assert -1.0 <= metrics.ssim(a, b) < 1.0
    assert 0.0 <= metrics.ms_ssim(a, b) < 1.0


def test_bad_inputs():
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        metrics.ssim(a, np.zeros((16, 17, 3), np.uint8))
    with pytest.raises(ValueError, match="smaller than"):
        metrics.ssim(np.zeros((10, 30), np.uint8), np.zeros((10, 30), np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        metrics.ms_ssim(a, a, scales=2)
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        metrics.psnr(np.zeros(5), np.zeros(5))
