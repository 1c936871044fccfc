"""`restyle-rt demo`: the whole job on an embedded default, no checkpoint needed.

1. write a small model in the official checkpoint format (pSp ResNet34, 64 px, S=10): a random generator and an
   encoder *fitted* to invert it (:mod:`restyle_rt.export.fit`, ~2 minutes on 2 cores), so its loop converges as a
   trained one does; ``--random`` keeps the random-weight encoder instead;
2. export it to validated ONNX artifacts;
3. let its own generator draw a target image (through the exported synthesis graph, in ONNX Runtime) from a true
   latent of the fitted model's distribution;
4. invert that image with the torch-free runtime and print, per step, the distance to the true latent, the
   image PSNR against the target, and the runtime-vs-PyTorch parity of that step.

The generator is random and the encoder fitted to it, not trained on photos: a fixture that shows the loop
converging, not a model for real images. With ``--random`` the encoder has learnt nothing and the loop diverges.
"""

from __future__ import annotations

import argparse

from ..errors import EXIT_OK
from .args import positive_int


def register(subparsers) -> None:
    """Add ``demo`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "demo", help="fitted toy model -> export -> invert, with per-step numbers", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default="demo", help="working directory (default ./demo)")
    p.add_argument("--iters", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--random",
        action="store_true",
        help="keep the random-weight encoder (its loop diverges) instead of fitting it (~2 min)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fsio import check_writable_dir

    out = check_writable_dir(args.out, "--out")  # before torch is imported

    import numpy as np

    from ..export import export_artifacts
    from ..export.fixtures import make_checkpoint
    from ..parity import compare
    from ..runtime import io
    from ..runtime.api import Inverter

    out.mkdir(parents=True, exist_ok=True)
    base = out / "restyle_psp_church_random.pt"
    ckpt = base if args.random else out / "restyle_psp_church_fitted.pt"
    art = out / ("artifacts-random" if args.random else "artifacts")
    if not base.exists():
        print(f"[1/4] writing a random-weight checkpoint in the official format: {base}")
        make_checkpoint(base, "ResNetBackboneEncoder", "church_encode", 64, seed=args.seed)
    if not ckpt.exists():
        from ..export.fit import fit_encoder

        print(f"[1/4] fitting its encoder to invert its own generator (a fixture, not a photo model): {ckpt}")
        rep = fit_encoder(base, ckpt, seed=args.seed)
        print(f"      fitted in {rep['time_s']:.0f} s")
    if not (art / "manifest.json").exists():
        print(f"[2/4] exporting to {art} (validated against PyTorch)")
        export_artifacts(ckpt, art, overwrite=True)
    w_true = _true_latent(ckpt, args.seed, args.random)
    with Inverter.load(art, backend="ort") as inv:
        target = io.to_uint8(inv.backend.synthesize(w_true)[0][0])  # HWC uint8, drawn by G
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
    if args.random:
        print(
            f"wrote {out / 'inversion.png'}. Random weights: the encoder learnt nothing, so no convergence is "
            "expected; parity with PyTorch is the point."
        )
    else:
        print(
            f"wrote {out / 'inversion.png'}. The encoder was fitted to this random generator: the loop converges "
            "as a trained one does, but it is a fixture, not a model for photos."
        )
    return EXIT_OK


def _true_latent(ckpt, seed: int, random_encoder: bool):
    """[1, S, 512] float32: the latent the target is drawn from (held out from the fit's own seeds)."""
    import numpy as np
    import torch

    from ..export.checkpoint import load_checkpoint

    c = load_checkpoint(ckpt)
    la = c.latent_avg
    if random_encoder:
        rng = np.random.default_rng(seed)
        return la.numpy()[None] + 0.5 * rng.standard_normal((1, *la.shape), np.float32)
    from ..export.fit import FIT_KEY, coords_to_latent, principal_subspace, sample_coords
    from ..export.reference import TorchModels

    cfg = c.opts[FIT_KEY]
    gen_net = TorchModels.from_checkpoint(c).synthesis_official.net
    u = principal_subspace(gen_net, int(cfg["k"]), int(cfg.get("pca_seed", 0)), int(cfg["n_pca"]))
    a = sample_coords(gen_net, la, u, 1, float(cfg["psi"]), torch.Generator().manual_seed(seed + 424_242))
    return coords_to_latent(a, la, u).numpy().astype(np.float32)


def _torch_reference(ckpt, x, n_iters):
    try:
        import torch

        from ..export.checkpoint import load_checkpoint
        from ..export.reference import TorchModels, reference_loop
    except ImportError:
        return None
    models = TorchModels.from_checkpoint(load_checkpoint(ckpt))
    return [s.latent.numpy() for s in reference_loop(models, torch.from_numpy(x), n_iters)]
