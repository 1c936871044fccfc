"""StyleGAN2 generator (rosinality layout, keys under ``decoder.``) in two formulations.

* :class:`Generator` is the official formulation, kept as the test reference: per-sample modulated weights run as
  a grouped conv (groups = batch), ``upfirdn2d`` for blur / upsample, noise from the fixed buffers.
* :class:`ExportSynthesis` is built from a Generator and is what goes into ONNX: static conv weights, the style
  applied to the activations, demodulation as a per-(sample, out-channel) factor computed in FP32, blur and
  upsampling as depthwise (transposed) convolutions, each layer's ``weight * noise`` folded into a constant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import BLUR_KERNEL, EqualLinear, fused_lrelu, make_kernel, upfirdn2d_ref

DEMOD_EPS = 1e-8


def channels_for(res: int, channel_multiplier: int = 2) -> int:
    return {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }[res]


# --- official formulation ------------------------------------------------------------------------------------


class Blur(nn.Module):
    def __init__(self, pad, upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL) * upsample_factor**2)
        self.pad = pad

    def forward(self, x):
        return upfirdn2d_ref(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    def __init__(self, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL) * factor**2)
        p = len(BLUR_KERNEL) - factor
        self.pad, self.factor = ((p + 1) // 2 + factor - 1, p // 2), factor

    def forward(self, x):
        return upfirdn2d_ref(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    def __init__(
        self, cin: int, cout: int, k: int, style_dim: int = 512, demodulate: bool = True, upsample: bool = False
    ):
        super().__init__()
        self.cin, self.cout, self.k = cin, cout, k
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            p = (len(BLUR_KERNEL) - 2) - (k - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        self.scale = 1 / math.sqrt(cin * k * k)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k))
        self.modulation = EqualLinear(style_dim, cin, bias_init=1.0)

    def forward(self, x, style):
        b, cin, h, w = x.shape
        s = self.modulation(style).view(b, 1, cin, 1, 1)
        wt = self.scale * self.weight * s  # [B, O, I, k, k]
        if self.demodulate:
            wt = wt * torch.rsqrt(wt.pow(2).sum([2, 3, 4]) + DEMOD_EPS).view(b, self.cout, 1, 1, 1)
        x = x.reshape(1, b * cin, h, w)
        if self.upsample:
            wt = wt.transpose(1, 2).reshape(b * cin, self.cout, self.k, self.k)
            out = F.conv_transpose2d(x, wt, padding=0, stride=2, groups=b)
            return self.blur(out.view(b, self.cout, out.shape[2], out.shape[3]))
        out = F.conv2d(x, wt.reshape(b * self.cout, cin, self.k, self.k), padding=self.k // 2, groups=b)
        return out.view(b, self.cout, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise):
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return fused_lrelu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, cin, cout, k, upsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, k, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(cout)

    def forward(self, x, style, noise):
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, cin, upsample=True):
        super().__init__()
        if upsample:
            self.upsample = Upsample(2)
        self.conv = ModulatedConv2d(cin, 3, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))


class Generator(nn.Module):
    """Official formulation; state_dict keys match the official ``decoder.*`` sub-dict (mapping included)."""

    def __init__(
        self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2, lr_mlp: float = 0.01
    ):
        super().__init__()
        self.size, self.style_dim = size, style_dim
        self.style = nn.Sequential(
            nn.Identity(),  # PixelNorm (no parameters) at index 0
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)],
        )
        ch = lambda r: channels_for(r, channel_multiplier)  # noqa: E731
        self.input = ConstantInput(ch(4))
        self.conv1 = StyledConv(ch(4), ch(4), 3)
        self.to_rgb1 = ToRGB(ch(4), upsample=False)
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs, self.upsamples, self.to_rgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        cin = ch(4)
        for i in range(3, self.log_size + 1):
            cout = ch(2**i)
            self.convs.append(StyledConv(cin, cout, 3, upsample=True))
            self.convs.append(StyledConv(cout, cout, 3))
            self.to_rgbs.append(ToRGB(cout))
            cin = cout

    def noise(self, i: int) -> torch.Tensor:
        return getattr(self.noises, f"noise_{i}")

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, 512] -> w [N, 512]: PixelNorm then the MLP (used for mean_latent, not by inversion)."""
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        return self.style[1:](z)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [B, S, 512] (or [B, 512], repeated to S) -> image [B, 3, R, R], fixed noise."""
        if latent.ndim == 2:
            latent = latent.unsqueeze(1).repeat(1, self.n_latent, 1)
        out = self.input.input.repeat(latent.shape[0], 1, 1, 1)
        out = self.conv1(out, latent[:, 0], self.noise(0))
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * k](out, latent[:, i], self.noise(2 * k + 1))
            out = self.convs[2 * k + 1](out, latent[:, i + 1], self.noise(2 * k + 2))
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip


# --- export formulation ---------------------------------------------------------------------------------------


class ModulatedConv2dNode(torch.autograd.Function):
    """One fused layer as a custom ONNX node ``ModulatedConv2d`` (see kernels/modulated_conv/CONTRACT.md).

    Eager/tracing forward runs the torch reference of the fused op; ``symbolic`` emits the node that TensorRT's
    ONNX parser maps to the plugin of the same name (fallback plugin importer).
    """

    @staticmethod
    def forward(ctx, x, s, weight, bias, noise, demodulate: int, upsample: int, activate: int, kernel_size: int):
        from ...kernels.reference import styled_conv

        return styled_conv(x, s, weight, bias, noise, bool(demodulate), bool(upsample), bool(activate)).to(x.dtype)

    @staticmethod
    def symbolic(g, x, s, weight, bias, noise, demodulate, upsample, activate, kernel_size):
        return g.op(
            "ModulatedConv2d",
            x,
            s,
            weight,
            bias,
            noise,
            demodulate_i=demodulate,
            upsample_i=upsample,
            activate_i=activate,
            kernel_size_i=kernel_size,
            plugin_version_s="1",
            plugin_namespace_s="",
        )


class ExportModConv(nn.Module):
    """x*s -> static conv -> (*demod) [+ noise + bias -> lrelu*sqrt2]. Up layers: transposed conv + depthwise blur."""

    def __init__(
        self, mc: ModulatedConv2d, noise: torch.Tensor = None, bias: torch.Tensor = None, plugin: bool = False
    ):
        super().__init__()
        self.plugin = plugin
        with torch.no_grad():
            if plugin:  # the node takes the stored (unscaled) weight; a zero bias / 1-element noise when absent
                self.register_buffer("pw", mc.weight[0].detach().clone())  # [O, I, k, k]
                self.register_buffer("pbias", bias.clone() if bias is not None else torch.zeros(mc.cout))
                self.register_buffer("pnoise", noise.clone() if noise is not None else torch.zeros(1, 1, 1, 1))
            w = (mc.weight[0] * mc.scale).float()  # [O, I, k, k]
            mw, mb = mc.modulation.effective()
            self.register_buffer("mod_w", mw.clone())  # [I, 512]
            self.register_buffer("mod_b", mb.clone())  # [I]
            if mc.upsample:
                self.register_buffer("weight", w.transpose(0, 1).contiguous())  # [I, O, k, k] for conv_transpose
                blur = mc.blur.kernel.flip([0, 1]).view(1, 1, 4, 4).repeat(mc.cout, 1, 1, 1)
                self.register_buffer("blur", blur)  # [O, 1, 4, 4] depthwise
                self.blur_pad = mc.blur.pad
            else:
                self.register_buffer("weight", w)
            self.register_buffer("wsq", w.pow(2).sum([2, 3]))  # [O, I]: sum_k W^2, for demodulation
            self.register_buffer("noise", None if noise is None else noise.clone())  # [1, 1, H, W]
            self.register_buffer("bias", None if bias is None else bias.clone())  # [O]
        self.demodulate, self.upsample, self.k = mc.demodulate, mc.upsample, mc.k

    def forward(self, x, w):  # x [B, I, H, W], w [B, 512]
        s = F.linear(w, self.mod_w, self.mod_b)  # [B, I]
        if self.plugin:
            return ModulatedConv2dNode.apply(
                x,
                s,
                self.pw,
                self.pbias,
                self.pnoise,
                int(self.demodulate),
                int(self.upsample),
                int(self.bias is not None),
                self.k,
            )
        x = x * s[:, :, None, None]
        if self.upsample:
            x = F.conv_transpose2d(x, self.weight, stride=2)  # [B, O, 2H+1, 2W+1]
            x = F.conv2d(F.pad(x, [self.blur_pad[0], self.blur_pad[1]] * 2), self.blur, groups=x.shape[1])
        else:
            x = F.conv2d(x, self.weight, padding=self.k // 2)  # [B, O, H, W]
        if self.demodulate:  # FP32 guard rail: the 1e-8 epsilon underflows in fp16
            d = torch.rsqrt(F.linear(s.float() * s.float(), self.wsq) + DEMOD_EPS)  # [B, O]
            x = x * d.to(x.dtype)[:, :, None, None]
        if self.noise is not None:
            x = x + self.noise
        if self.bias is not None:
            x = fused_lrelu(x, self.bias)
        return x


class ExportSynthesis(nn.Module):
    """latent [B, S, 512] -> image [B, 3, R, R] in the export formulation (see module docstring).

    With ``plugin=True`` each modulated conv becomes one ``ModulatedConv2d`` node for the TensorRT plugin.
    """

    def __init__(self, g: Generator, plugin: bool = False):
        super().__init__()
        self.register_buffer("const", g.input.input.detach().clone())  # [1, 512, 4, 4]
        layers = [g.conv1] + list(g.convs)
        self.convs = nn.ModuleList(
            [
                ExportModConv(sc.conv, (sc.noise.weight * g.noise(i)).detach(), sc.activate.bias.detach(), plugin)
                for i, sc in enumerate(layers)
            ]
        )
        self.rgbs = nn.ModuleList(
            [ExportModConv(t.conv, bias=t.bias.detach().view(3), plugin=plugin) for t in [g.to_rgb1] + list(g.to_rgbs)]
        )
        for m in self.rgbs:  # ToRGB: + bias, no activation
            m.register_buffer("rgb_bias", m.bias.view(1, 3, 1, 1))
            m.bias = None
            if plugin:
                m.pbias.zero_()  # the bias stays a graph Add, as in the portable form
        up = make_kernel(BLUR_KERNEL) * 4
        self.register_buffer("up_kernel", up.view(1, 1, 4, 4).repeat(3, 1, 1, 1))  # [3, 1, 4, 4]
        self.n_latent = g.n_latent

    def upsample_skip(self, skip):  # [B, 3, H, W] -> [B, 3, 2H, 2W]
        # upfirdn2d(up=2, pad=(2, 1)) == depthwise conv_transpose(k=4, s=2, p=1): both are a true convolution
        # of the zero-inserted input with the kernel.
        return F.conv_transpose2d(skip, self.up_kernel, stride=2, padding=1, groups=3)

    def forward(self, latent):  # [B, S, 512]
        x = self.const.expand(latent.shape[0], -1, -1, -1)
        x = self.convs[0](x, latent[:, 0])
        skip = self.rgbs[0](x, latent[:, 1]) + self.rgbs[0].rgb_bias
        i = 1
        for k in range(1, len(self.rgbs)):
            x = self.convs[2 * k - 1](x, latent[:, i])
            x = self.convs[2 * k](x, latent[:, i + 1])
            skip = self.rgbs[k](x, latent[:, i + 2]) + self.rgbs[k].rgb_bias + self.upsample_skip(skip)
            i += 2
        return skip  # [B, 3, R, R]
