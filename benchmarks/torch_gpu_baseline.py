"""GPU baseline: the torch eager ReStyle loop (official and export formulations) on a random-weight checkpoint.

What a GPU runtime must beat: 5-step loops timed per batch on CUDA, FP32 (TF32 convolutions: torch's default) and
``torch.autocast(float16)``. Random weights: the timings hold for trained checkpoints of the same architecture; the
outputs mean nothing. Needs a CUDA build of torch and a GPU (exits with status 2 otherwise).

    python3 benchmarks/torch_gpu_baseline.py --size 1024 --batch 1 4 16 --out benchmarks/gpu/torch_gpu_ffhq-1024.json
    python3 benchmarks/torch_gpu_baseline.py --size 256 --encoder-type ResNetBackboneEncoder \\
        --dataset-type church_encode --batch 1 4 16 --out benchmarks/gpu/torch_gpu_church-256.json

Each row: p50 and min of ``--repeat`` timed loops after ``--warmup`` untimed ones, seconds per batch and per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--encoder-type", default="BackboneEncoder")
    ap.add_argument("--dataset-type", default="ffhq_encode")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("torch_gpu_baseline: no CUDA device (or a CPU build of torch); nothing measured", file=sys.stderr)
        return 2
    from restyle_rt.export.checkpoint import load_checkpoint
    from restyle_rt.export.fixtures import make_checkpoint
    from restyle_rt.export.reference import TorchModels, reference_loop

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        make_checkpoint(path, args.encoder_type, args.dataset_type, args.size, seed=1, latent_avg_shape="SxD")
        m = TorchModels.from_checkpoint(load_checkpoint(path))
    dev = torch.device("cuda")
    m.ckpt.latent_avg = m.ckpt.latent_avg.to(dev)
    for name in ("encoder_official", "synthesis_official", "encoder", "synthesis"):
        setattr(m, name, getattr(m, name).to(dev))
    rows = []
    for official in (True, False):
        for dtype in ("fp32", "fp16"):
            for b in args.batch:
                x = torch.randn(b, 3, *m.ckpt.spec.input_hw, device=dev).clamp(-1, 1)
                ctx = torch.autocast("cuda", dtype=torch.float16, enabled=dtype == "fp16")
                with ctx:
                    for _ in range(args.warmup):
                        reference_loop(m, x, args.iters, official=official)
                    torch.cuda.synchronize()
                    ts = []
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        reference_loop(m, x, args.iters, official=official)
                        torch.cuda.synchronize()
                        ts.append(time.perf_counter() - t0)
                ts.sort()
                row = {
                    "formulation": "official" if official else "export",
                    "dtype": dtype,
                    "batch": b,
                    "iters": args.iters,
                    "p50_s_per_batch": ts[len(ts) // 2],
                    "min_s": ts[0],
                    "s_per_image": ts[len(ts) // 2] / b,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    doc = {
        "what": f"torch eager ReStyle loop, {args.iters} steps, random-weight {args.encoder_type} "
        f"{args.dataset_type} {args.size}, CUDA (TF32 convs: torch default)",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "rows": rows,
        "command": "python3 benchmarks/torch_gpu_baseline.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
