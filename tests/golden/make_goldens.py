"""Regenerate the golden files from the OFFICIAL ReStyle code (github.com/yuval-alaluf/restyle-encoder).

The goldens are what the official ``run_on_batch`` / ``get_average_image`` (utils/inference_utils.py) compute on
random-weight checkpoints that restyle-rt's own ``make_checkpoint`` writes from fixed seeds: per-step W+ latents,
per-step images box-averaged down to 16 px wide, per-channel image statistics, and the average image. Numbers only;
no official code is stored in this repository.

Usage (an official checkout, e.g. ``git clone https://github.com/yuval-alaluf/restyle-encoder``)::

    python3 tests/golden/make_goldens.py --official /path/to/restyle-encoder [--commit SHA] [--only NAME ...]

The official code cannot run on a CPU as shipped: its two StyleGAN2 ops JIT-compile CUDA at import, and its ResNet
encoders import ``torchvision`` (whose PyPI wheel does not import next to the CPU torch wheel). This harness changes
only those two things, before importing the official modules:

* ``torch.utils.cpp_extension.load`` returns a stand-in for the compiled extension: ``upfirdn2d`` calls the official
  file's own pure-torch ``upfirdn2d_native`` (dead code upstream, missing its ``F`` import, which is supplied), and
  ``fused_bias_act`` computes the kernel's act=3 formula ``scale * lrelu(x + bias, alpha)``. All official Python
  around them (``UpFirDn2d.forward``'s reshapes, ``FusedLeakyReLUFunction``, ``Blur``, ``Upsample`` ...) runs as is.
* ``torchvision.models.resnet34`` is a plain re-statement of torchvision's ResNet-34 layer layout (BasicBlock:
  conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + identity or 1x1-conv/BN downsample, ReLU), without weights:
  the checkpoint overwrites every one of them (``pretrained=True`` would download ImageNet weights).

``get_average_image`` hard-codes ``.to('cuda')``; that one call is mapped to the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import subprocess
import sys
import tempfile
import types
from argparse import Namespace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_ITERS = 5
THUMB_W = 16  # golden images are box-averaged down to this width

# name: (encoder_type, dataset_type, output_size, latent_avg_shape, batch). Seeds: sum(map(ord, name)), as in
# tests/model_fixtures.py, so the toy configs defined there too share their checkpoints (and CI exports) with the
# parity tests.
CONFIGS = {
    "psp-irse50-ffhq": ("BackboneEncoder", "ffhq_encode", 32, "SxD", 2),
    "e4e-irse50-ffhq": ("ProgressiveBackboneEncoder", "ffhq_encode", 32, "D", 2),
    "psp-resnet34-church": ("ResNetBackboneEncoder", "church_encode", 16, "D", 2),
    # pSp's FPN encoders (GradualStyleEncoder / ResNetGradualStyleEncoder): 32 px gives S = 8, so all three pyramid
    # levels (styles 0-2, 3-6, 7) are used; the IR-SE50 one is tests/model_fixtures.py's config and seed
    "psp-fpn-irse50-ffhq": ("GradualStyleEncoder", "ffhq_encode", 32, "SxD", 2),
    "psp-fpn-resnet34-church": ("ResNetGradualStyleEncoder", "church_encode", 32, "D", 2),
    # (no toy cars: the official code crops rows 64:448 whatever the output size, so cars exist at 512 only)
    # real-size architectures (official channel layouts, 14 / 16 / 18 styles, the cars crop at 512)
    "church-256": ("ResNetBackboneEncoder", "church_encode", 256, "D", 1),
    "cars-512": ("ResNetProgressiveBackboneEncoder", "cars_encode", 512, "SxD", 1),
    "e4e-irse50-ffhq-256": ("ProgressiveBackboneEncoder", "ffhq_encode", 256, "SxD", 1),
    "ffhq-1024": ("BackboneEncoder", "ffhq_encode", 1024, "SxD", 1),
}


def seed_of(name: str) -> int:
    return sum(map(ord, name))


def golden_inputs(n: int, hw, seed: int) -> np.ndarray:
    """Seeded low-frequency images in [-1, 1], [n, 3, H, W] float32 (numpy only, so both sides make the same)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    coarse = rng.uniform(-1, 1, (n, 3, h // 16, w // 16))
    x = np.kron(coarse, np.ones((16, 16))) + 0.1 * rng.standard_normal((n, 3, h, w))
    return np.clip(x, -1, 1).astype(np.float32)


def thumb(img: np.ndarray) -> np.ndarray:
    """Box-average [..., H, W] down to width THUMB_W (exact integer factor)."""
    h, w = img.shape[-2:]
    k = max(w // THUMB_W, 1)
    assert h % k == 0 and w % k == 0, (h, w, k)
    return img.reshape(*img.shape[:-2], h // k, k, w // k, k).mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def checkpoint_sums(ckpt: dict):
    """(sha256 of the sorted key names and shapes, [K, 2] per-tensor (sum, sum |x|) in float64).

    Identifies the checkpoint's weights while tolerating last-bit rounding differences between CPUs (the BatchNorm
    statistics and latent_avg are computed by forward passes when the checkpoint is made).
    """
    items = {f"state_dict.{k}": v for k, v in ckpt["state_dict"].items()}
    items["latent_avg"] = ckpt["latent_avg"]
    keys = sorted(items)
    layout = hashlib.sha256(json.dumps([[k, list(items[k].shape)] for k in keys]).encode()).hexdigest()
    sums = np.array([[float(items[k].double().sum()), float(items[k].double().abs().sum())] for k in keys])
    return layout, sums


# ----------------------------------------------------------------------------------------------------------------
# the two stand-ins
# ----------------------------------------------------------------------------------------------------------------


def _fake_extension(name: str):
    import torch.nn.functional as F

    ext = types.SimpleNamespace()
    if name == "fused":

        def fused_bias_act(x, bias, refer, act, grad, alpha, scale):
            assert act == 3 and grad == 0 and refer.numel() == 0, "only the forward lrelu is used at inference"
            if bias.numel():
                x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
            return F.leaky_relu(x, alpha) * scale

        ext.fused_bias_act = fused_bias_act
    elif name == "upfirdn2d":

        def upfirdn2d(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
            mod = sys.modules["models.stylegan2.op.upfirdn2d"]
            mod.F = F  # the official upfirdn2d_native uses F without importing it
            return mod.upfirdn2d_native(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)

        ext.upfirdn2d = upfirdn2d
    else:
        raise RuntimeError(f"unexpected extension {name}")
    return ext


def _torchvision_stub():
    from torch import nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class ResNet34(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = 64
            self.layer1 = self._layer(64, 3, 1)
            self.layer2 = self._layer(128, 4, 2)
            self.layer3 = self._layer(256, 6, 2)
            self.layer4 = self._layer(512, 3, 2)

        def _layer(self, planes, blocks, stride):
            down = None
            if stride != 1 or self.inplanes != planes:
                down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            layers = [BasicBlock(self.inplanes, planes, stride, down)]
            self.inplanes = planes
            layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

    def resnet34(pretrained=False, **_):
        return ResNet34()  # no ImageNet download: the checkpoint overwrites every weight

    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.resnet34 = models.resnet34 = resnet34
    tv.models, models.resnet = models, resnet
    return {"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet}


def import_official(official: Path):
    """Import the official pSp, e4e and inference utils with the CPU stand-ins in place."""
    import torch.utils.cpp_extension as cpp

    sys.modules.update(_torchvision_stub())
    real_load = cpp.load
    cpp.load = lambda name, *a, **k: _fake_extension(name)
    sys.path.insert(0, str(official))
    try:
        psp = importlib.import_module("models.psp")
        e4e = importlib.import_module("models.e4e")
        utils = importlib.import_module("utils.inference_utils")
    finally:
        cpp.load = real_load
    return psp.pSp, e4e.e4e, utils


# ----------------------------------------------------------------------------------------------------------------
# one config
# ----------------------------------------------------------------------------------------------------------------


def run_official(official_mods, ckpt_path: Path, x: np.ndarray):
    """(avg image [3,H,W], per-step latents [T,B,S,512], per-step images [T,B,3,h,w]) from the official code."""
    import torch

    pSp, e4e, utils = official_mods
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    opts = dict(
        ckpt["opts"], checkpoint_path=str(ckpt_path), device="cpu", n_iters_per_batch=N_ITERS, resize_outputs=False
    )
    opts = Namespace(**opts)
    net = (e4e if "Progressive" in opts.encoder_type else pSp)(opts).eval()
    to = torch.Tensor.to
    with torch.no_grad():
        torch.Tensor.to = lambda t, *a, **k: t if a and a[0] == "cuda" else to(t, *a, **k)
        try:
            avg = utils.get_average_image(net, opts)
        finally:
            torch.Tensor.to = to
        images, latents = utils.run_on_batch(torch.from_numpy(x), net, opts, avg)
    b = x.shape[0]
    lat = np.stack([np.stack([latents[i][t] for i in range(b)]) for t in range(N_ITERS)]).astype(np.float32)
    img = np.stack([np.stack([images[i][t].numpy() for i in range(b)]) for t in range(N_ITERS)]).astype(np.float32)
    return avg.numpy().astype(np.float32), lat, img


def make_one(name: str, official_mods, tmp: Path) -> dict:
    import torch

    from restyle_rt.export.fixtures import make_checkpoint
    from restyle_rt.spec import ModelSpec

    et, dt, size, la, batch = CONFIGS[name]
    path = tmp / f"{name}.pt"
    ckpt = make_checkpoint(path, et, dt, size, seed=seed_of(name), latent_avg_shape=la)
    spec = ModelSpec.from_opts(ckpt["opts"])
    x = golden_inputs(batch, spec.input_hw, seed_of(name))
    avg, lat, img = run_official(official_mods, path, x)
    layout, sums = checkpoint_sums(ckpt)
    np.savez_compressed(
        HERE / f"{name}.npz",
        latents=lat,
        image_thumbs=thumb(img),
        avg_image_thumb=thumb(avg),
        image_mean=img.mean(axis=(-2, -1)),
        image_std=img.std(axis=(-2, -1)),
        inputs_x=x[:, :, ::16, ::16],
        checkpoint_sums=sums,
    )
    return {
        "make_checkpoint": {
            "encoder_type": et,
            "dataset_type": dt,
            "output_size": size,
            "seed": seed_of(name),
            "latent_avg_shape": la,
        },
        "inputs": {"fn": "golden_inputs", "batch": batch, "seed": seed_of(name), "hw": list(spec.input_hw)},
        "n_iters": N_ITERS,
        "image_hw": list(img.shape[-2:]),
        "torch": torch.__version__,
        "checkpoint_layout_sha256": layout,
    }


def official_commit(official: Path, given: str | None = None) -> str:
    if given:
        return given
    try:
        return subprocess.run(
            ["git", "-C", str(official), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("cannot read the official commit with git; pass --commit SHA") from None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="official restyle-encoder checkout")
    ap.add_argument("--commit", help="its commit (default: git rev-parse HEAD in --official)")
    ap.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="regenerate these configs only")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parents[1]))  # this repository's restyle_rt
    commit = official_commit(args.official, args.commit)
    index_path = HERE / "goldens.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"configs": {}}
    index.update(
        official_repo="https://github.com/yuval-alaluf/restyle-encoder",
        official_commit=commit,
        regenerate="python3 tests/golden/make_goldens.py --official PATH [--commit SHA] [--only NAME ...]",
    )
    mods = import_official(args.official)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(CONFIGS):
            print(f"[make_goldens] {name} ...", flush=True)
            entry = make_one(name, mods, Path(tmp))
            entry["official_commit"] = commit
            entry["npz_sha256"] = hashlib.sha256((HERE / f"{name}.npz").read_bytes()).hexdigest()
            index["configs"][name] = entry
            index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
