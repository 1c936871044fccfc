"""The two graphs of the contract as torch modules: what ``torch.onnx.export`` traces.

``EncoderGraph``: (image, feedback, latent) -> latent_next = latent + E(concat(image, feedback)) (e4e rule inside).
``SynthesisGraph``: latent -> (image, feedback): G(latent), the cars crop, and the exact box-average (or, for toy
sizes below the encoder resolution, nearest replication, as AdaptiveAvgPool2d does) to the encoder resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import ModelSpec
from .nets.encoders import BatchedHeads, ReStyleEncoder
from .nets.synthesis import ExportSynthesis, Generator


def crop_rows(spec: ModelSpec) -> tuple[int, int]:
    """Rows of the generator output kept as the image: all, or the cars band R/8 : 7R/8 (64:448 at 512)."""
    r = spec.output_size
    return (r // 8, r - r // 8) if spec.is_cars else (0, r)


def pool_to(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """AdaptiveAvgPool2d(hw) for integer ratios, as explicit ops: box mean when shrinking, repeat when growing."""
    h, w = x.shape[2], x.shape[3]
    th, tw = hw
    if (h, w) == (th, tw):
        return x
    if h >= th:
        if h % th or w % tw or h // th != w // tw:
            raise ValueError(f"cannot box-pool {h}x{w} to {th}x{tw} exactly")
        k = h // th
        return F.avg_pool2d(x, k, k)
    if th % h or tw % w or th // h != tw // w:
        raise ValueError(f"cannot replicate {h}x{w} to {th}x{tw} exactly")
    return F.interpolate(x, scale_factor=float(th // h), mode="nearest")


class EncoderGraph(nn.Module):
    def __init__(self, encoder: ReStyleEncoder, official: bool = False):
        super().__init__()
        self.encoder = encoder
        self.heads = None
        if not official:  # one BatchedHeads per feature level (one level unless the encoder is an FPN)
            groups = encoder.head_groups(torch.zeros(1, 6, 64, 64))
            self.heads = nn.ModuleList(
                [BatchedHeads(nn.ModuleList(encoder.styles[i] for i in idx)) for _, idx in groups]
            )

    def forward(self, image, feedback, latent):  # [B,3,H,W], [B,3,H,W], [B,S,512]
        x = torch.cat([image, feedback], 1)  # [B, 6, H, W]
        if self.heads is None:
            return latent + self.encoder.forward_official(x)
        groups = self.encoder.head_groups(x)
        h = torch.cat([heads(f) for heads, (f, _) in zip(self.heads, groups)], 1)  # [B, S, 512]
        return latent + self.encoder._e4e(h)


class SynthesisGraph(nn.Module):
    def __init__(self, generator: Generator, spec: ModelSpec, official: bool = False, plugin: bool = False):
        super().__init__()
        self.official = official
        self.net = generator if official else ExportSynthesis(generator, plugin=plugin)
        self.rows = crop_rows(spec)
        self.input_hw = spec.input_hw

    def forward(self, latent):  # [B, S, 512]
        img = self.net(latent)  # [B, 3, R, R]
        r0, r1 = self.rows
        if (r0, r1) != (0, img.shape[2]):
            img = img[:, :, r0:r1]  # cars: [B, 3, 3R/4, R]
        if self.official:
            fb = nn.AdaptiveAvgPool2d(self.input_hw)(img)  # the official face_pool
        else:
            fb = pool_to(img, self.input_hw)  # [B, 3, H, W]
        return img, fb
