"""`restyle-rt demo`: the whole job on an embedded default, no checkpoint needed.

1. write a small random-weight model in the official checkpoint format (pSp ResNet34, 64 px, S=10);
2. export it to validated ONNX artifacts;
3. let its own generator draw a target image (through the exported synthesis graph, in ONNX Runtime);
4. invert that image with the torch-free runtime and print, per step, the distance to the true latent, the
   image PSNR against the target, and the runtime-vs-PyTorch parity of that step.

The weights are random, so the encoder has learnt nothing: do not expect the inversion error to converge as it
does with a trained checkpoint. What the demo proves is the pipeline and its per-step agreement with PyTorch.
"""
from __future__ import annotations

import argparse

from .argtypes import positive_int
from .errors import EXIT_OK


def register(sub) -> None:
    p = sub.add_parser("demo", help="random model -> export -> invert, with per-step numbers",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo", help="working directory (default ./demo)")
    p.add_argument("--iters", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .fsio import check_writable_dir

    out = check_writable_dir(args.out, "--out")  # before torch is imported

    import numpy as np

    from .export import export_artifacts
    from .export.fixtures import make_checkpoint
    from .parity import compare
    from .runtime import io
    from .runtime.api import Inverter

    out.mkdir(parents=True, exist_ok=True)
    ckpt, art = out / "restyle_psp_church_random.pt", out / "artifacts"
    if not ckpt.exists():
        print(f"[1/4] writing a random-weight checkpoint in the official format: {ckpt}")
        make_checkpoint(ckpt, "ResNetBackboneEncoder", "church_encode", 64, seed=args.seed)
    if not (art / "manifest.json").exists():
        print(f"[2/4] exporting to {art} (validated against PyTorch)")
        export_artifacts(ckpt, art, overwrite=True)
    with Inverter.load(art, backend="ort") as inv:
        rng = np.random.default_rng(args.seed)
        w_true = inv.artifacts.latent_avg[None] + 0.5 * rng.standard_normal((1, inv.spec.n_styles, 512), np.float32)
        target = io.to_uint8(inv.backend.synthesize(w_true)[0][0])          # HWC uint8, drawn by G
        io.write_png(out / "target.png", target)
        print(f"[3/4] the generator drew {out / 'target.png'} ({target.shape[1]}x{target.shape[0]})")
        x = inv.preprocess([target])  # [1, 3, H, W]
        res = inv.invert(x, n_iters=args.iters, return_steps=True)
        backend = inv.backend.name
    ref = _torch_reference(ckpt, x, args.iters)
    print(f"[4/4] inverted with backend={backend}; per step:")
    print("  step | latent RMS to truth | PSNR vs target (dB) | parity vs PyTorch (latent rel-L2)")
    tgt = target.astype(np.float32) / 127.5 - 1
    for t, (lat, img) in enumerate(zip(res.step_latents, res.step_images)):
        rms = float(np.sqrt(np.mean((lat - w_true) ** 2)))
        psnr = compare(np.clip(img[0].transpose(1, 2, 0), -1, 1), tgt).psnr_db
        par = f"{compare(lat, ref[t]).rel_l2:.2e}" if ref else "torch not installed"
        print(f"  {t + 1:>4} | {rms:>19.4f} | {psnr:>19.2f} | {par}")
    io.write_png(out / "inversion.png", io.to_uint8(res.images[0]))
    print(f"wrote {out / 'inversion.png'}. Random weights: the encoder learnt nothing, so no convergence is "
          "expected; parity with PyTorch is the point.")
    return EXIT_OK


def _torch_reference(ckpt, x, n_iters):
    try:
        import torch

        from .export.checkpoint import load_checkpoint
        from .export.reference import TorchModels, reference_loop
    except ImportError:
        return None
    models = TorchModels.from_checkpoint(load_checkpoint(ckpt))
    return [s.latent.numpy() for s in reference_loop(models, torch.from_numpy(x), n_iters)]
