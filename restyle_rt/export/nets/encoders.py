"""ReStyle encoders with the official state_dict layout (keys under ``encoder.``), plus the batched-heads form.

Backbones: IR-SE50 (``BackboneEncoder`` / ``ProgressiveBackboneEncoder``) and ResNet34 (``ResNetBackboneEncoder`` /
``ResNetProgressiveBackboneEncoder``). The ResNet34 body is built directly (no torchvision, no ImageNet download).
``forward_official`` runs the S style heads one by one as the official code does; ``forward`` runs them batched:
one 512 -> S*512 conv, three grouped convs (groups = S) and one batched matmul, which is bit-identical in math.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...spec import ENCODER_TYPES_E4E, ModelSpec
from .ops import EqualLinear

HEAD_SLOPE = 0.01  # nn.LeakyReLU() default, used by the style heads


# --- IR-SE50 -------------------------------------------------------------------------------------------------


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)  # [B, C, 1, 1]
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class IRSEUnit(nn.Module):
    """bottleneck_IR_SE: BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN -> SE, plus shortcut."""

    def __init__(self, cin: int, depth: int, stride: int):
        super().__init__()
        self.stride = stride
        if cin == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # pure subsampling; no parameters
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x):
        if isinstance(self.shortcut_layer, nn.MaxPool2d):
            sc = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        else:
            sc = self.shortcut_layer(x)
        return self.res_layer(x) + sc


IRSE50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))  # (in, depth, units)


class IRSE50Backbone(nn.Module):
    def __init__(self, input_nc: int = 6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        for cin, depth, n in IRSE50_STAGES:
            units.append(IRSEUnit(cin, depth, 2))
            units += [IRSEUnit(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)

    def forward(self, x):  # [B, 6, H, W]
        return self.body(self.input_layer(x))  # [B, 512, H/16, W/16]


# --- ResNet34 ------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + idt)


RESNET34_STAGES = ((64, 64, 3, 1), (64, 128, 4, 2), (128, 256, 6, 2), (256, 512, 3, 2))


class ResNet34Backbone(nn.Module):
    """7x7/2 stem with PReLU (named ``relu``), no max-pool, then layer1..4 flattened into ``body``."""

    def __init__(self, input_nc: int = 6):
        super().__init__()
        self.conv1 = nn.Conv2d(input_nc, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.PReLU(64)
        blocks: list[nn.Module] = []
        for cin, cout, n, stride in RESNET34_STAGES:
            blocks.append(BasicBlock(cin, cout, stride))
            blocks += [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*blocks)

    def forward(self, x):  # [B, 6, H, W]
        return self.body(self.relu(self.bn1(self.conv1(x))))  # [B, 512, H/16, W/16]


# --- style heads ---------------------------------------------------------------------------------------------


class GradualStyleBlock(nn.Module):
    """One official head: 4 x (conv3x3/2 + LeakyReLU 0.01), flatten, EqualLinear(512, 512)."""

    def __init__(self, channels: int = 512, spatial: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU(HEAD_SLOPE)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, channels, lr_mul=1.0)
        self.channels = channels

    def forward(self, x):
        return self.linear(self.convs(x).reshape(-1, self.channels))


FPN_TYPES = ("GradualStyleEncoder", "ResNetGradualStyleEncoder")
FPN_TAPS = {"ir_se50": (6, 20, 23), "resnet34": (6, 12, 15)}  # body indices of c1 (128 ch), c2 (256), c3 (512)
COARSE, MIDDLE = 3, 7  # FPN heads 0..2 read c3 (16 px), 3..6 read p2 (32 px), 7.. read p1 (64 px)


def head_spatial(i: int, fpn: bool) -> int:
    """The official ``GradualStyleBlock`` spatial size of head ``i`` (its conv count is log2 of it)."""
    return 16 if not fpn or i < COARSE else 32 if i < MIDDLE else 64


class ReStyleEncoder(nn.Module):
    """Backbone + S heads, keys exactly as the official ``encoder.*`` sub-dict.

    ``forward`` (batched heads) is the export formulation; ``forward_official`` loops over heads.
    Both apply the e4e rule when ``e4e`` is set: row 0 = h0, row i = h0 + h_i.
    With ``fpn`` (pSp's ``GradualStyleEncoder`` / ``ResNetGradualStyleEncoder``) the heads read a feature pyramid:
    c3, p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1) (bilinear, align_corners=True).
    """

    def __init__(self, backbone: str, n_styles: int, e4e: bool, input_nc: int = 6, fpn: bool = False):
        super().__init__()
        if backbone == "ir_se50":
            bb = IRSE50Backbone(input_nc)
            self.input_layer, self.body = bb.input_layer, bb.body
        elif backbone == "resnet34":
            bb = ResNet34Backbone(input_nc)
            self.conv1, self.bn1, self.relu, self.body = bb.conv1, bb.bn1, bb.relu, bb.body
        else:
            raise ValueError(f"unknown backbone {backbone!r}")
        self.backbone = backbone
        self.styles = nn.ModuleList([GradualStyleBlock(spatial=head_spatial(i, fpn)) for i in range(n_styles)])
        self.n_styles, self.e4e, self.fpn = n_styles, e4e, fpn
        if fpn:
            self.latlayer1 = nn.Conv2d(256, 512, 1)
            self.latlayer2 = nn.Conv2d(128, 512, 1)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ReStyleEncoder:
        return cls(
            spec.backbone, spec.n_styles, spec.encoder_type in ENCODER_TYPES_E4E, fpn=spec.encoder_type in FPN_TYPES
        )

    def _stem(self, x):
        if self.backbone == "ir_se50":
            return self.input_layer(x)
        return self.relu(self.bn1(self.conv1(x)))

    def features(self, x):  # [B, 6, H, W] -> [B, 512, H/16, W/16]
        return self.body(self._stem(x))

    def head_groups(self, x):
        """[(feature map, head indices)]: every head on the backbone output, or the FPN's three levels."""
        if not self.fpn:
            return [(self.features(x), range(self.n_styles))]
        taps, y, c = FPN_TAPS[self.backbone], self._stem(x), []
        for i, unit in enumerate(self.body):
            y = unit(y)
            if i in taps:
                c.append(y)  # c1 [B,128,H/8,W/8], c2 [B,256,..], c3 [B,512,..]
        c1, c2, c3 = c
        p2 = _upsample_add(c3, self.latlayer1(c2))  # [B, 512, H/8, W/8]
        p1 = _upsample_add(p2, self.latlayer2(c1))  # [B, 512, H/4, W/4]
        groups = [(c3, range(0, COARSE)), (p2, range(COARSE, MIDDLE)), (p1, range(MIDDLE, self.n_styles))]
        return [(f, r) for f, r in groups if len(r)]

    def _e4e(self, h):  # [B, S, 512]
        if not self.e4e:
            return h
        mask = torch.ones(1, self.n_styles, 1, dtype=h.dtype, device=h.device)
        mask[:, 0] = 0
        return h[:, :1] + h * mask

    def forward_official(self, x):
        heads = [self.styles[i](f) for f, idx in self.head_groups(x) for i in idx]
        return self._e4e(torch.stack(heads, dim=1))

    def forward(self, x):
        """Official head-by-head formulation (see BatchedHeads for the export one)."""
        return self.forward_official(x)


def _upsample_add(x, y):
    """The official FPN merge: bilinear (align_corners=True) resize of ``x`` to ``y``'s size, plus ``y``."""
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


class BatchedHeads(nn.Module):
    """All S heads at once: conv 512 -> S*512, grouped convs (groups=S), batched EqualLinear. -> [B, S, 512].

    Weights are concatenated once here (not per call), so the ONNX graph holds each weight once.
    """

    def __init__(self, heads: nn.ModuleList):
        super().__init__()
        self.n = len(heads)
        convs = [[m for m in h.convs if isinstance(m, nn.Conv2d)] for h in heads]
        self.n_convs = len(convs[0])
        with torch.no_grad():
            for j in range(self.n_convs):
                self.register_buffer(f"w{j}", torch.cat([c[j].weight for c in convs], 0))  # [S*512, Cin, 3, 3]
                self.register_buffer(f"b{j}", torch.cat([c[j].bias for c in convs], 0))  # [S*512]
            self.register_buffer("lw", torch.stack([h.linear.effective()[0] for h in heads], 0))  # [S, 512, 512]
            self.register_buffer("lb", torch.stack([h.linear.effective()[1] for h in heads], 0))  # [S, 512]

    def forward(self, feat):  # [B, 512, h, w]
        y = feat
        for j in range(self.n_convs):
            y = F.conv2d(
                y, getattr(self, f"w{j}"), getattr(self, f"b{j}"), stride=2, padding=1, groups=1 if j == 0 else self.n
            )
            y = F.leaky_relu(y, HEAD_SLOPE)  # [B, S*512, h', w']
        y = y.reshape(y.shape[0], self.n, -1)  # [B, S, 512] (spatial is 1x1 here)
        return torch.einsum("bsi,soi->bso", y, self.lw) + self.lb
