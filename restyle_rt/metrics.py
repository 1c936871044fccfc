"""Image-quality metrics in NumPy (no torch, no SciPy): PSNR, SSIM and MS-SSIM on uint8 RGB images.

* :func:`psnr`: ``10 log10(peak^2 / MSE)`` over every pixel and channel, peak-to-peak 255 for uint8 0..255
  images (``inf`` for identical images).
* :func:`ssim`: Wang et al. 2004 (the reference ``ssim_index.m``): an 11x11 Gaussian window of sigma 1.5
  (normalised to sum 1), K1 = 0.01, K2 = 0.03, L = 255, population (not sample) statistics, the map taken where the
  window fits inside the image ("valid": no padding) and averaged; colour images per channel, then averaged over
  channels. This is scikit-image's ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``, checked against it in the tests.
* :func:`ms_ssim`: Wang, Simoncelli & Bovik 2003 with the standard weights (0.0448, 0.2856, 0.3001, 0.2363,
  0.1333): contrast-structure terms at scales 1..M-1, the full SSIM at scale M, the image 2x2-average-pooled
  (stride 2, an odd last row/column dropped) between scales; negative terms clipped to 0 before the power (as
  pytorch-msssim and TensorFlow do); per channel, then averaged. Five scales need a shorter side of at least
  11 x 2^4 = 176 px. A smaller image uses as many scales as fit (:func:`ms_ssim_scales`: the window must fit the
  last one) with the first M weights renormalised to sum 1; with one scale MS-SSIM equals SSIM.
"""

from __future__ import annotations

import numpy as np

WIN_SIZE = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = WIN_SIZE, sigma: float = SIGMA) -> np.ndarray:
    """The 1-D Gaussian taps [size] (float64, sum 1); the 2-D window is their outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _as_float(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {list(a.shape)} vs {list(b.shape)}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected [h, w] or [h, w, c] images, got shape {list(a.shape)}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two same-shape images (``peak``: the value range, 255 for uint8); ``inf`` when identical."""
    x, y = _as_float(a, b)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(peak * peak / mse))


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable "valid" correlation of [h, w, c] with the window ``g`` on both axes: [h-k+1, w-k+1, c]."""
    k = len(g)
    h, w = x.shape[:2]
    rows = sum(g[i] * x[i : h - k + 1 + i] for i in range(k))  # [h-k+1, w, c]
    return sum(g[i] * rows[:, i : w - k + 1 + i] for i in range(k))  # [h-k+1, w-k+1, c]


def _ssim_cs(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """(SSIM, contrast-structure) per channel [c] of float64 [h, w, c] images: the valid maps' means."""
    if min(x.shape[:2]) < WIN_SIZE:
        raise ValueError(
            f"an image of {x.shape[0]}x{x.shape[1]} px is smaller than the {WIN_SIZE}x{WIN_SIZE} SSIM window"
        )
    g = gaussian_window()
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    vx = _filter_valid(x * x, g) - mx * mx
    vy = _filter_valid(y * y, g) - my * my
    cxy = _filter_valid(x * y, g) - mx * my
    cs = (2.0 * cxy + c2) / (vx + vy + c2)
    lum = (2.0 * mx * my + c1) / (mx * mx + my * my + c1)
    return (lum * cs).mean(axis=(0, 1)), cs.mean(axis=(0, 1))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM (Wang et al.; see the module docstring) of two [h, w] or [h, w, c] images, both sides >= 11 px.

    Raises:
        ValueError: shapes differ, or an image is smaller than the 11x11 window.
    """
    x, y = _as_float(a, b)
    return float(_ssim_cs(x, y, data_range)[0].mean())


def ms_ssim_scales(hw: tuple[int, int], max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many MS-SSIM scales an image of ``hw`` allows: the 11x11 window must fit the last (pooled) scale; 0 when
    it does not fit even the image itself."""
    side, n = min(int(hw[0]), int(hw[1])), 0
    while n < max_scales and side >= WIN_SIZE:
        n += 1
        side //= 2
    return n


def _pool2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling, stride 2, of [h, w, c] (an odd last row/column dropped)."""
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, scales: int = 0) -> float:
    """MS-SSIM (see the module docstring) of two [h, w] or [h, w, c] images.

    Args:
        scales: how many scales (1..5); 0: five, or as many as the image allows (:func:`ms_ssim_scales`).

    Raises:
        ValueError: shapes differ, or the image is too small for ``scales`` (or for one scale).
    """
    x, y = _as_float(a, b)
    fit = ms_ssim_scales(x.shape[:2])
    m = scales or fit
    if not 1 <= m <= len(MS_SSIM_WEIGHTS) or m > fit:
        raise ValueError(
            f"MS-SSIM with {m} scale(s) does not fit a {x.shape[0]}x{x.shape[1]} image "
            f"(at most {fit}: the 11x11 window must fit the coarsest scale)"
        )
    w = np.asarray(MS_SSIM_WEIGHTS[:m], np.float64)
    w = w / w.sum()
    terms = []
    for j in range(m):
        s, cs = _ssim_cs(x, y, data_range)
        terms.append(s if j == m - 1 else cs)
        if j < m - 1:
            x, y = _pool2(x), _pool2(y)
    t = np.maximum(np.stack(terms), 0.0)  # [m, c]
    return float(np.prod(t ** w[:, None], axis=0).mean())
