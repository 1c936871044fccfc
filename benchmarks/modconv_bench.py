"""Time the fused ModulatedConv2d kernel against the portable decomposition, per layer of the 1024 generator.

Portable decomposition (what the plugin-free ONNX graph runs; here on torch/cuDNN):
    x*s -> conv2d (or conv_transpose2d s2 + depthwise 4x4 blur) with static W'
        -> *d + noise + bias -> lrelu*sqrt(2)
Fused: restyle_rt.kernels (libmodconv_kernels.so) called through ctypes on torch's current stream.

Usage (needs a CUDA build of torch and a GPU; exits with status 2 otherwise):
    python benchmarks/modconv_bench.py --batch 1 8 --dtype fp16 --out benchmarks/results/modconv
Writes <out>.json (all timings, device, versions, command) and <out>.md (table). No numbers are recorded
without a GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import sys
import time
from pathlib import Path

CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}


def generator_layers(size: int = 1024):
    """Every modulated conv of the synthesis (official-restyle.md §5.3): (name, Cin, Cout, H_in, k, up)."""
    layers = [("conv1@4", 512, 512, 4, 3, False), ("to_rgb1@4", 512, 3, 4, 1, False)]
    r = 8
    while r <= size:
        cin, c = CHANNELS[r // 2], CHANNELS[r]
        layers += [
            (f"up@{r}", cin, c, r // 2, 3, True),
            (f"conv@{r}", c, c, r, 3, False),
            (f"to_rgb@{r}", c, 3, r, 1, False),
        ]
        r *= 2
    return layers


def portable(torch, F, x, s, w_scaled, wsq, bias, noise, blur, k, up, demod, act):
    """The plugin-free decomposition; w_scaled is W*scale in x's dtype, wsq = sum_kk (W*scale)^2 in FP32."""
    xs = x * s[:, :, None, None].to(x.dtype)
    if up:
        y = F.conv_transpose2d(xs, w_scaled.transpose(0, 1), stride=2)
        y = F.conv2d(y, blur.expand(y.shape[1], 1, 4, 4), padding=1, groups=y.shape[1])
    else:
        y = F.conv2d(xs, w_scaled, padding=k // 2)
    if demod:
        d = torch.rsqrt(s.square() @ wsq.t() + 1e-8)  # [B, Cout] FP32
        y = y * d[:, :, None, None].to(y.dtype)
    y = y + noise.to(y.dtype) + bias[None, :, None, None].to(y.dtype)
    return F.leaky_relu(y, 0.2) * math.sqrt(2) if act else y


def time_cuda(torch, fn, iters: int, warmup: int) -> float:
    """Median milliseconds per call over `iters` CUDA-event-timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def bench_layer(torch, F, lib, layer, batch, dtype, iters, warmup):
    from restyle_rt.kernels import runner

    name, cin, cout, h, k, up = layer
    is_rgb = k == 1
    demod, act = not is_rgb, not is_rgb
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(batch, cin, h, h, device=dev, generator=g).to(dtype)
    s = torch.randn(batch, cin, device=dev, generator=g) * 0.5 + 1
    w = torch.randn(cout, cin, k, k, device=dev, generator=g)
    bias = torch.randn(cout, device=dev, generator=g) * 0.1
    ho = 2 * h if up else h
    noise = torch.randn(1, 1, ho, ho, device=dev, generator=g) * 0.1
    out = torch.empty(batch, cout, ho, ho, device=dev, dtype=dtype)
    scale = 1 / math.sqrt(cin * k * k)
    w_scaled, wsq = (w * scale).to(dtype), (w * scale).square().sum([2, 3])
    blur = torch.tensor([1.0, 3.0, 3.0, 1.0], device=dev)
    blur = (torch.outer(blur, blur) / 16).to(dtype)[None, None]

    p = runner.make_params(tuple(x.shape), tuple(w.shape), noise.numel(), demod, up, act)
    ws = torch.empty(max(int(lib.modconv_workspace_size(ctypes.byref(p))), 4), dtype=torch.uint8, device=dev)
    dt = 1 if dtype == torch.float16 else 0

    def fused():
        st = lib.modconv_forward(
            ctypes.byref(p),
            dt,
            x.data_ptr(),
            s.data_ptr(),
            w.data_ptr(),
            bias.data_ptr(),
            noise.data_ptr(),
            out.data_ptr(),
            ws.data_ptr(),
            ws.numel(),
            torch.cuda.current_stream().cuda_stream,
        )
        if st != 0:
            raise RuntimeError(lib.modconv_last_error().decode())

    def port():
        return portable(torch, F, x, s, w_scaled, wsq, bias, noise, blur, k, up, demod, act)

    fused()
    ref = portable(torch, F, x.float(), s, w * scale, wsq, bias, noise, blur.float(), k, up, demod, act)
    rel = float((out.float() - ref).norm() / ref.norm())
    t_fused = time_cuda(torch, fused, iters, warmup)
    t_port = time_cuda(torch, port, iters, warmup)
    macs = batch * cout * cin * (ho * ho if not up else h * h * 4) * k * k  # fused kernel's MACs (up: 4 phases)
    return {
        "layer": name,
        "batch": batch,
        "cin": cin,
        "cout": cout,
        "h_in": h,
        "h_out": ho,
        "k": k,
        "up": up,
        "fused_ms": t_fused,
        "portable_ms": t_port,
        "speedup": t_port / t_fused,
        "fused_tflops": 2 * macs / (t_fused * 1e-3) / 1e12,
        "fused_vs_fp32_ref_rel_l2": rel,
    }


def to_markdown(rows, meta) -> str:
    lines = [
        f"# ModulatedConv2d: fused kernel vs portable decomposition ({meta['dtype']}, {meta['device']})",
        "",
        f"Command: `{meta['command']}`  ",
        (
            f"torch {meta['torch']}, CUDA {meta['cuda']}, cuDNN {meta['cudnn']}, "
            f"median of {meta['iters']} iterations after {meta['warmup']} warm-up."
        ),
        "",
        "| layer | B | Cin→Cout | H_in→H_out | fused ms | portable ms | speed-up | fused TFLOP/s | rel-L2 vs fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['batch']} | {r['cin']}→{r['cout']} | {r['h_in']}→{r['h_out']} | "
            f"{r['fused_ms']:.4f} | {r['portable_ms']:.4f} | {r['speedup']:.2f}× | "
            f"{r['fused_tflops']:.2f} | "
            f"{r['fused_vs_fp32_ref_rel_l2']:.2e} |"
        )
    for b in sorted({r["batch"] for r in rows}):
        f = sum(r["fused_ms"] for r in rows if r["batch"] == b)
        q = sum(r["portable_ms"] for r in rows if r["batch"] == b)
        lines.append(f"| **total** | {b} | | | {f:.3f} | {q:.3f} | {q / f:.2f}× | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/modconv_bench"))
    args = ap.parse_args(argv)
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("modconv_bench: needs torch (with CUDA) for the portable decomposition", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(
            f"modconv_bench: no CUDA GPU visible to torch {torch.__version__} "
            f"(CUDA build: {torch.version.cuda}); nothing was timed, no results written.",
            file=sys.stderr,
        )
        return 2
    from restyle_rt.kernels import build

    cc = torch.cuda.get_device_capability()
    lib = build.load_library(archs=[f"{cc[0]}{cc[1]}"])
    torch.backends.cudnn.benchmark = True
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    rows = [
        bench_layer(torch, F, lib, layer, b, dtype, args.iters, args.warmup)
        for b in args.batch
        for layer in generator_layers(args.size)
    ]
    meta = {
        "device": torch.cuda.get_device_name(),
        "cc": list(cc),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "iters": args.iters,
        "warmup": args.warmup,
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = to_markdown(rows, meta)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
