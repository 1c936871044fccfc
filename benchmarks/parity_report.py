"""Measure the numbers behind restyle_rt.parity.TOLERANCES on the test fixtures and write them as JSON.

Usage::

    python3 benchmarks/parity_report.py [--iters 5] [--out benchmarks/cpu/parity_fixtures.json]

Per fixture config (tests/model_fixtures.py): the torch export formulation vs the official formulation after each
loop step; for the exported configs also the export-time manifest report (ORT vs torch, one call per graph) and
the ORT backend loop vs the official torch loop after each step. Metrics: rel-L2 and PSNR (range [-1, 1]).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from model_fixtures import CONFIGS, EXPORTED, artifacts_path, checkpoint_path  # noqa: E402

from restyle_rt.artifacts import load  # noqa: E402
from restyle_rt.export.checkpoint import load_checkpoint  # noqa: E402
from restyle_rt.export.fixtures import sample_images  # noqa: E402
from restyle_rt.export.reference import TorchModels, reference_loop  # noqa: E402
from restyle_rt.parity import compare  # noqa: E402
from restyle_rt.runtime.backends import get_backend  # noqa: E402


def _step(lat, img, ref_lat, ref_img) -> dict:
    li, ii = compare(lat, ref_lat), compare(img, ref_img)
    return {"latent_rel_l2": li.rel_l2, "image_rel_l2": ii.rel_l2, "image_psnr_db": ii.psnr_db}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "cpu" / "parity_fixtures.json"))
    args = ap.parse_args()
    report = {"command": " ".join(["python3"] + sys.argv), "torch": torch.__version__, "configs": {}}
    for name in CONFIGS:
        models = TorchModels.from_checkpoint(load_checkpoint(checkpoint_path(name)))
        x = sample_images(2, models.ckpt.spec.input_hw, torch.Generator().manual_seed(7))
        off = reference_loop(models, x, args.iters, official=True)
        exp = reference_loop(models, x, args.iters, official=False)
        rec = {
            "torch_export_vs_official_per_step": [
                _step(e.latent.numpy(), e.image.numpy(), o.latent.numpy(), o.image.numpy()) for e, o in zip(exp, off)
            ]
        }
        if name in EXPORTED:
            art = load(artifacts_path(name))
            rec["export_manifest_parity"] = art.manifest.parity
            with get_backend("ort", art) as be:
                res = be.run_loop(x.numpy(), args.iters, return_steps=True)
            rec["ort_loop_vs_official_per_step"] = [
                _step(res.step_latents[t], res.step_images[t], o.latent.numpy(), o.image.numpy())
                for t, o in enumerate(off)
            ]
        report["configs"][name] = rec
        print(name, "done", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
