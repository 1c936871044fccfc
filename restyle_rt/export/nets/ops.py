"""Small ops shared by the official (reference) and export formulations, in pure torch.

The official StyleGAN2 ops are CUDA extensions compiled at import; these are restatements of their math:
``upfirdn2d_ref`` (zero-insert, pad, true convolution with the flipped FIR kernel, subsample) and the fused
bias + leaky-ReLU(0.2) x sqrt(2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
BLUR_KERNEL = (1, 3, 3, 1)


def make_kernel(k: Sequence[float] = BLUR_KERNEL) -> torch.Tensor:
    """Separable FIR kernel normalised to sum 1: outer(k, k) / sum."""
    k = torch.tensor(k, dtype=torch.float32)
    k = k[None, :] * k[:, None]  # [4, 4]
    return k / k.sum()


def upfirdn2d_ref(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample (zero insertion), pad (negative crops), FIR-filter (true convolution), downsample.

    Same pad on both axes, as the official op. Output side: (n*up + p0 + p1 - k) // down + 1.
    """
    b, c, h, w = x.shape
    p0, p1 = pad
    kh, kw = kernel.shape
    y = x.reshape(b * c, 1, h, 1, w, 1)
    y = F.pad(y, [0, up - 1, 0, 0, 0, up - 1])  # zero-insert
    y = y.reshape(b * c, 1, h * up, w * up)
    y = F.pad(y, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    y = y[:, :, max(-p0, 0) : y.shape[2] - max(-p1, 0), max(-p0, 0) : y.shape[3] - max(-p1, 0)]
    wk = torch.flip(kernel, [0, 1]).view(1, 1, kh, kw).to(y)
    y = F.conv2d(y, wk)
    y = y[:, :, ::down, ::down]
    return y.reshape(b, c, y.shape[2], y.shape[3])


def fused_lrelu(x: torch.Tensor, bias: torch.Tensor, slope: float = 0.2, gain: float = SQRT2) -> torch.Tensor:
    """gain * leaky_relu(x + bias[c], slope), bias broadcast along dim 1 for any rank."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), slope) * gain


class EqualLinear(nn.Module):
    """Equalised-lr linear: y = x (W lr_mul / sqrt(in))^T + b lr_mul; optional fused lrelu. Keys: weight, bias."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) as actually applied."""
        return self.weight * self.scale, self.bias * self.lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.effective()
        if self.activation:
            return fused_lrelu(F.linear(x, w), b)
        return F.linear(x, w, b)
