"""The PyTorch reference: the official formulation and loop, for parity checks and the ``torch-official`` baseline.

``reference_loop`` restates ``run_on_batch`` (official §4.3): w0 = latent_avg, y0 = pooled G(latent_avg) (cars:
cropped), then per step w = w + E(cat(x, y)); img = G(w) (cars: crop); y = AdaptiveAvgPool(img).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checkpoint import Checkpoint
from .graphs import EncoderGraph, SynthesisGraph


@dataclass
class TorchModels:
    """Both graphs in both formulations, built once from a checkpoint."""

    ckpt: Checkpoint
    encoder: EncoderGraph  # export formulation (batched heads)
    synthesis: SynthesisGraph  # export formulation (static weights, folded noise)
    encoder_official: EncoderGraph  # head-by-head
    synthesis_official: SynthesisGraph  # grouped conv + upfirdn2d

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> TorchModels:
        enc, gen = ckpt.build()
        return cls(
            ckpt,
            EncoderGraph(enc).eval(),
            SynthesisGraph(gen, ckpt.spec).eval(),
            EncoderGraph(enc, official=True).eval(),
            SynthesisGraph(gen, ckpt.spec, official=True).eval(),
        )

    @torch.no_grad()
    def avg_feedback(self) -> torch.Tensor:
        """y0 [3, H, W]: the pooled (cars: cropped) G(latent_avg), official formulation."""
        return self.synthesis_official(self.ckpt.latent_avg[None])[1][0]


@dataclass
class Step:
    latent: torch.Tensor  # [B, S, 512]
    image: torch.Tensor  # [B, 3, h, w]
    feedback: torch.Tensor  # [B, 3, H, W]


@torch.no_grad()
def reference_loop(models: TorchModels, images: torch.Tensor, n_iters: int, official: bool = True) -> list[Step]:
    """Run the residual loop in torch; returns every step's latent, image and feedback."""
    enc = models.encoder_official if official else models.encoder
    syn = models.synthesis_official if official else models.synthesis
    b = images.shape[0]
    w = models.ckpt.latent_avg[None].expand(b, -1, -1).contiguous()  # [B, S, 512]
    y = models.avg_feedback()[None].expand(b, -1, -1, -1).contiguous()  # [B, 3, H, W]
    steps = []
    for _ in range(n_iters):
        w = enc(images, y, w)
        img, y = syn(w)
        steps.append(Step(w, img, y))
    return steps
