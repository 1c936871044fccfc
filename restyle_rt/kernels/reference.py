"""Reference implementations of the fused StyleGAN2 modulated convolution (the ``ModulatedConv2d`` op).

Formulations of the same math (StyleGAN2's ``ModulatedConv2d`` / ``StyledConv`` / ``ToRGB`` as rosinality's
``model.py`` defines them), each written to be read, not to be fast:

* ``impl='ref'``: activation modulation with static weights, ``conv(x*s, W*scale) * d + noise + bias``,
  lrelu. This is what the CUDA kernel computes and what the portable ONNX graph exports.
* ``impl='grouped'``: the official rosinality form; per-sample weights ``W*scale*s`` (demodulated), batch
  folded into groups, ``conv_transpose2d`` + ``Blur`` for upsampling.
* ``impl='phase'``: the kernel's upsampling algebra; "transpose 3x3 s2 + Blur" as four 3x3 phase kernels at
  input resolution followed by a pixel shuffle (see ``upsample_phase_weights``).
* ``impl='cuda'``: the fused CUDA kernel through ``restyle_rt.kernels.runner`` (needs a CUDA device).

``styled_conv_np`` is a torch-free NumPy restatement (scatter-add transposed conv, explicit blur) used as the
Polygraphy-style plugin reference (``PLUGIN_REFS``). Demodulation is always computed in FP32 (1e-8
underflows in FP16).
"""

from __future__ import annotations

import math

import numpy as np

DEMOD_EPS = 1e-8
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
BLUR_1D = np.array([1.0, 3.0, 3.0, 1.0]) / 4.0  # normalised [1,3,3,1] (x) [1,3,3,1] x up^2=4 == outer(BLUR_1D, BLUR_1D)


def weight_scale(weight_shape) -> float:
    """Equalised-lr scale 1/sqrt(Cin*k*k) of a stored modconv weight [Cout, Cin, k, k]."""
    _, cin, kh, kw = weight_shape
    return 1.0 / math.sqrt(cin * kh * kw)


def blur_kernel_2d() -> np.ndarray:
    """Blur kernel of the upsampling StyledConv: make_kernel([1,3,3,1]) * 4, [4, 4], sums to 4."""
    k = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0])
    return k / k.sum() * 4.0


def upsample_phase_weights(weight: np.ndarray) -> np.ndarray:
    """Compose "conv_transpose 3x3 stride 2, pad 0" with "Blur pad (1,1)" into four 3x3 phase kernels.

    Output pixel (2Y+py, 2X+px) = sum_{i,ty,tx} x[i, Y-1+ty, X-1+tx] * P[o, i, py, px, ty, tx] (zero
    padded), with P[..., py, px, ty, tx] = C[py+2-2ty, px+2-2tx] and
    C[dy, dx] = sum_{a,b} k1[a] k1[b] W[dy+a-1, dx+b-1] the 6x6 composed kernel on taps dy, dx in [-2, 3].
    Both phases of an axis read the same 3 input rows, so the up layer is a 3x3 conv at input resolution
    producing 4 outputs per position (4x the MACs of the bare transposed conv, no 2H+1 intermediate). The
    CUDA kernel builds P on the fly from W in shared memory with the same coefficients.

    Args:
        weight (np.ndarray): [Cout, Cin, 3, 3] (any scale; the map is linear).

    Returns:
        np.ndarray: [Cout, Cin, 2, 2, 3, 3] float64.
    """
    assert weight.shape[2:] == (3, 3), weight.shape
    m = phase_matrix()  # [2, 3, 3]: (p, t, j)
    w = np.asarray(weight, dtype=np.float64)
    return np.einsum("ytj,xsk,oijk->oiyxts", m, m, w)  # [Cout, Cin, 2, 2, 3, 3]


def phase_matrix() -> np.ndarray:
    """M[p, t, j] = k1[j + 2t - p - 1] (0 outside [0,3]): weight tap j -> (phase p, window tap t)."""
    m = np.zeros((2, 3, 3))
    for p in range(2):
        for t in range(3):
            for j in range(3):
                a = j + 2 * t - p - 1
                if 0 <= a < 4:
                    m[p, t, j] = BLUR_1D[a]
    return m


# ----------------------------------------------------------------------------------------------------------
# torch references


def upfirdn2d_ref(x, k, up: int = 1, down: int = 1, pad=(0, 0)):
    """Pure-torch upfirdn2d as defined by the official op (§5.8): zero-insert, pad (p0, p1), true conv,
    decimate."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    p0, p1 = pad
    x = x.reshape(b * c, 1, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])  # zero-insert
    x = x.reshape(b * c, 1, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    kf = torch.flip(torch.as_tensor(k, dtype=x.dtype), [0, 1])[None, None]  # true convolution
    x = F.conv2d(x, kf)
    x = x[:, :, ::down, ::down]
    return x.reshape(b, c, x.shape[2], x.shape[3])


def demod_coefficients(weight, s):
    """d[b, o] = rsqrt(sum_{i,kh,kw} (W'[o,i,kh,kw] * s[b,i])^2 + 1e-8), W' = weight*scale; always FP32.

    Args:
        weight (torch.Tensor): [Cout, Cin, k, k] stored weight.
        s (torch.Tensor): [B, Cin] styles.

    Returns:
        torch.Tensor: [B, Cout] float32.
    """
    w = weight.float() * weight_scale(weight.shape)  # [O, I, k, k]
    wsq = w.square().sum(dim=[2, 3])  # [O, I]
    return (s.float().square() @ wsq.t() + DEMOD_EPS).rsqrt()  # [B, O]


def _epilogue(y, noise, bias, activate: bool):
    import torch.nn.functional as F

    if noise is not None:
        y = y + noise  # [1, 1, Ho, Wo] broadcast
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    if activate:
        y = F.leaky_relu(y, LRELU_SLOPE) * LRELU_GAIN
    return y


def _conv_activation_modulated(x, s, weight, demodulate: bool, upsample: bool, phase: bool):
    import torch
    import torch.nn.functional as F

    w = weight.float() * weight_scale(weight.shape)  # [O, I, k, k]
    xs = x.float() * s.float()[:, :, None, None]  # [B, I, H, W]
    if not upsample:
        y = F.conv2d(xs, w, padding=weight.shape[-1] // 2)  # [B, O, H, W]
    elif phase:
        p = torch.from_numpy(upsample_phase_weights(w.double().numpy())).to(torch.float32)  # [O, I, 2, 2, 3, 3]
        p = p.permute(0, 2, 3, 1, 4, 5).reshape(-1, w.shape[1], 3, 3)  # [O*4, I, 3, 3] in (o, py, px) order
        y = F.pixel_shuffle(F.conv2d(xs, p, padding=1), 2)  # [B, O, 2H, 2W]
    else:
        y = F.conv_transpose2d(xs, w.transpose(0, 1), stride=2)  # [B, O, 2H+1, 2W+1]
        y = upfirdn2d_ref(y, blur_kernel_2d(), pad=(1, 1))  # [B, O, 2H, 2W]
    if demodulate:
        y = y * demod_coefficients(weight, s)[:, :, None, None]
    return y


def _conv_grouped(x, s, weight, demodulate: bool, upsample: bool):
    """The official ModulatedConv2d forward (rosinality model.py) with per-sample weights and groups=B."""
    import torch.nn.functional as F

    b, cin, h, w_ = x.shape
    cout, _, k, _ = weight.shape
    wt = weight_scale(weight.shape) * weight.float()[None] * s.float()[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        d = (wt.square().sum([2, 3, 4]) + DEMOD_EPS).rsqrt()  # [B, O]
        wt = wt * d[:, :, None, None, None]
    xg = x.float().reshape(1, b * cin, h, w_)  # [1, B*I, H, W]
    if upsample:
        wt = wt.transpose(1, 2).reshape(b * cin, cout, k, k)  # [B*I, O, k, k]
        y = F.conv_transpose2d(xg, wt, padding=0, stride=2, groups=b)  # [1, B*O, 2H+1, 2W+1]
        y = upfirdn2d_ref(y.reshape(b, cout, y.shape[2], y.shape[3]), blur_kernel_2d(), pad=(1, 1))
    else:
        y = F.conv2d(xg, wt.reshape(b * cout, cin, k, k), padding=k // 2, groups=b)
        y = y.reshape(b, cout, h, w_)
    return y


def styled_conv(
    x,
    s,
    weight,
    bias,
    noise,
    demodulate: bool = True,
    upsample: bool = False,
    activate: bool = True,
    impl: str = "ref",
):
    """One fused modulated conv layer: StyledConv (3x3, optionally upsampling) or, with
    demodulate=activate=False
    and k=1, ToRGB (without the skip add).

    Args:
        x (torch.Tensor): [B, Cin, H, W] activations (FP32 or FP16; computed in FP32).
        s (torch.Tensor): [B, Cin] styles, the modulation EqualLinear output.
        weight (torch.Tensor): [Cout, Cin, k, k] stored weight, not multiplied by 1/sqrt(Cin*k*k).
        bias (torch.Tensor | None): [Cout] FusedLeakyReLU bias (ToRGB: its [1,3,1,1] bias flattened).
        noise (torch.Tensor | None): [1, 1, Hout, Wout] fixed noise already times the layer's noise weight.
        demodulate (bool): apply d[b,o] (StyledConv True, ToRGB False).
        upsample (bool): conv_transpose 3x3 stride 2 + Blur (Hout = 2H).
        activate (bool): leaky_relu(., 0.2) * sqrt(2) after bias.
        impl (str): 'ref' | 'grouped' | 'phase' | 'cuda' (see module docstring).

    Returns:
        torch.Tensor: [B, Cout, Hout, Wout] float32 (impl='cuda': dtype of x).
    """
    assert impl in ("ref", "grouped", "phase", "cuda"), impl
    assert x.ndim == 4 and s.shape == x.shape[:2] and weight.shape[1] == x.shape[1], (
        x.shape,
        s.shape,
        weight.shape,
    )
    assert not upsample or weight.shape[-1] == 3, "upsampling is defined for 3x3 only"
    if impl == "cuda":
        import torch

        from . import runner

        out = runner.modulated_conv(
            x.numpy(),
            s.numpy(),
            weight.numpy(),
            None if bias is None else bias.numpy(),
            None if noise is None else noise.numpy(),
            demodulate=demodulate,
            upsample=upsample,
            activate=activate,
        )
        return torch.from_numpy(out)
    if impl == "grouped":
        y = _conv_grouped(x, s, weight, demodulate, upsample)
    else:
        y = _conv_activation_modulated(x, s, weight, demodulate, upsample, phase=impl == "phase")
    return _epilogue(y, noise, bias, activate)


def to_rgb(x, s, weight, bias, impl: str = "ref"):
    """ToRGB without the skip add: 1x1 modconv, no demod, + bias, no activation; [B,Cin,H,W] -> [B,3,H,W]."""
    return styled_conv(
        x, s, weight, bias.reshape(-1), None, demodulate=False, upsample=False, activate=False, impl=impl
    )


# ----------------------------------------------------------------------------------------------------------
# NumPy reference (no torch), float64 internally


def styled_conv_np(
    x: np.ndarray,
    s: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    noise: np.ndarray | None,
    demodulate: bool = True,
    upsample: bool = False,
    activate: bool = True,
) -> np.ndarray:
    """NumPy restatement of ``styled_conv`` (impl='ref' math) with explicit loops over kernel taps.

    Returns:
        np.ndarray: [B, Cout, Hout, Wout] float32.
    """
    x = np.asarray(x, np.float64)
    s = np.asarray(s, np.float64)
    w = np.asarray(weight, np.float64) * weight_scale(weight.shape)  # [O, I, k, k]
    b, _, h, wd = x.shape
    cout, _, k, _ = w.shape
    xs = x * s[:, :, None, None]  # [B, I, H, W]
    if upsample:
        u = np.zeros((b, cout, 2 * h + 1, 2 * wd + 1))  # transposed conv, stride 2, pad 0
        for kh in range(k):
            for kw in range(k):
                u[:, :, kh : kh + 2 * h : 2, kw : kw + 2 * wd : 2] += np.einsum("bihw,oi->bohw", xs, w[:, :, kh, kw])
        up = np.pad(u, ((0, 0), (0, 0), (1, 1), (1, 1)))  # Blur: pad (1,1), flipped 4x4 kernel
        kf = blur_kernel_2d()[::-1, ::-1]
        y = np.zeros((b, cout, 2 * h, 2 * wd))
        for a in range(4):
            for c in range(4):
                y += kf[a, c] * up[:, :, a : a + 2 * h, c : c + 2 * wd]
    else:
        p = k // 2
        xp = np.pad(xs, ((0, 0), (0, 0), (p, p), (p, p)))
        y = np.zeros((b, cout, h, wd))
        for kh in range(k):
            for kw in range(k):
                y += np.einsum("bihw,oi->bohw", xp[:, :, kh : kh + h, kw : kw + wd], w[:, :, kh, kw])
    if demodulate:
        d = 1.0 / np.sqrt((s**2) @ np.square(w).sum(axis=(2, 3)).T + DEMOD_EPS)  # [B, O]
        y = y * d[:, :, None, None]
    if noise is not None:
        y = y + np.asarray(noise, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(1, -1, 1, 1)
    if activate:
        y = np.where(y >= 0, y, LRELU_SLOPE * y) * LRELU_GAIN
    return y.astype(np.float32)


def modulated_conv2d_node_np(inputs, attrs) -> np.ndarray:
    """Reference for one ONNX ``ModulatedConv2d`` node (see modulated_conv/CONTRACT.md).

    Args:
        inputs (list): [x [B,Cin,H,W], s [B,Cin], weight [Cout,Cin,k,k], bias [Cout], noise [1,1,Hout,Wout]].
        attrs (dict): demodulate, upsample, activate, kernel_size (ints).

    Returns:
        np.ndarray: [B, Cout, Hout, Wout] in the dtype of x.
    """
    x, s, weight, bias, noise = inputs
    if int(attrs["kernel_size"]) != weight.shape[-1]:
        raise ValueError(f"kernel_size attr {attrs['kernel_size']} != weight {list(weight.shape)}")
    y = styled_conv_np(
        x, s, weight, bias, noise, bool(attrs["demodulate"]), bool(attrs["upsample"]), bool(attrs["activate"])
    )
    return y.astype(x.dtype)


PLUGIN_REFS = {"ModulatedConv2d": modulated_conv2d_node_np}
