"""Tiny stand-in artifacts (same graph I/O names as the real export) for when the exporter is not importable.

The synthesis toy has the export's modulated-conv pattern: x*s -> Conv(static W) -> * rsqrt(s*s @ wsq + 1e-8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from restyle_rt import artifacts
from restyle_rt.spec import ModelSpec

TOY_SPEC = ModelSpec(
    n_styles=4,
    output_size=32,
    input_hw=(32, 32),
    image_hw=(32, 32),
    encoder_type="BackboneEncoder",
    dataset_type="ffhq_encode",
)


def make_toy_artifacts(out: Path) -> Path:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    S = TOY_SPEC.n_styles

    class Enc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 16, 3, stride=4, padding=1)
            self.head = torch.nn.Linear(16 * 8 * 8, S * 512)

        def forward(self, image, feedback, latent):
            x = F.leaky_relu(self.conv(torch.cat([image, feedback], 1)), 0.2)
            return latent + self.head(x.flatten(1)).view(-1, S, 512)

    class Syn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.const = torch.nn.Parameter(torch.randn(1, 16, 32, 32))
            self.mod = torch.nn.Linear(512, 16)
            self.w = torch.nn.Parameter(torch.randn(16, 16, 3, 3) / 12)
            self.register_buffer("wsq", self.w.detach().pow(2).sum([2, 3]))
            self.rgb = torch.nn.Conv2d(16, 3, 1)

        def forward(self, latent):
            s = self.mod(latent[:, 0]) + 1.0  # [B, 16]
            x = self.const * s[:, :, None, None]
            d = torch.rsqrt(F.linear(s * s, self.wsq) + 1e-8)  # [B, 16]
            x = F.leaky_relu(F.conv2d(x, self.w, padding=1) * d[:, :, None, None], 0.2)
            img = torch.tanh(self.rgb(x))
            return img, F.avg_pool2d(img, 1)

    out.mkdir(parents=True, exist_ok=True)
    dyn = {0: "batch"}
    enc_in = (torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, S, 512))
    torch.onnx.export(
        Enc().eval(),
        enc_in,
        str(out / "encoder.onnx"),
        input_names=["image", "feedback", "latent"],
        output_names=["latent_next"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={n: dyn for n in ("image", "feedback", "latent", "latent_next")},
    )
    torch.onnx.export(
        Syn().eval(),
        (torch.randn(2, S, 512),),
        str(out / "synthesis.onnx"),
        input_names=["latent"],
        output_names=["image", "feedback"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={n: dyn for n in ("latent", "image", "feedback")},
    )
    np.save(out / artifacts.LATENT_AVG, np.zeros((S, 512), np.float32))
    np.save(out / artifacts.AVG_FEEDBACK, np.zeros((3, 32, 32), np.float32))
    manifest = {
        "format": artifacts.FORMAT,
        "format_version": artifacts.FORMAT_VERSION,
        "spec": TOY_SPEC.to_dict(),
        "graphs": {
            g: {"file": f"{g}.onnx", "sha256": artifacts.sha256_file(out / f"{g}.onnx")}
            for g in ("encoder", "synthesis")
        },
        "opset": 17,
        "batch_profile": [1, 1, 4],
        "toy": True,
    }
    artifacts.write_manifest(out, manifest)
    json.loads((out / artifacts.MANIFEST).read_text())
    return out
