"""Measure the CPU-emulated CUDA kernels against the NumPy reference: rel-L2 and CPU seconds per layer shape.

Runs the same cases as tests/kernels/test_emulated.py (every StyleGAN2 modulated-conv layer shape at 256/512/1024
px, FP32 and FP16 storage, sanitized build) one process at a time and writes JSON with, per case, the rel-L2 error
and the CPU seconds (user + sys) of the emulator process, which do not depend on how loaded the machine is.

    python3 benchmarks/kernel_emulation_report.py --out benchmarks/results/kernel_emulation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "kernels"))

from emu import emulate  # noqa: E402 - after the sys.path insert
from kernel_cases import LAYER_KINDS, make_layer, stylegan2_layer_shapes, tolerance  # noqa: E402 - after the sys.path insert
from test_emulated import _reduced_size, rel_l2  # noqa: E402 - after the sys.path insert

from restyle_rt.kernels import reference as R  # noqa: E402 - after the sys.path insert


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(exe, kind, batch, cin, cout, h, w, noise, seed) -> dict:
    x, s, wt, b, n = make_layer(kind, batch, cin, cout, h, w, seed=seed, noise=noise)
    _, _, up, demod, act = kind
    row = {"layer": kind[0], "cin": cin, "cout": cout, "batch": batch, "h": h, "w": w}
    for dtype, prec in ((np.float32, "fp32"), (np.float16, "fp16")):
        xd = x.astype(dtype)
        c0 = _cpu()
        got, _ = emulate.modulated_conv(xd, s, wt, b, n, demod, up, act, exe=exe)
        row[f"{prec}_cpu_s"] = round(_cpu() - c0, 2)
        row[f"{prec}_rel_l2"] = rel_l2(got, R.styled_conv_np(xd, s, wt, b, n, demod, up, act))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    c0, t0 = _cpu(), time.time()
    exe = emulate.build_emulator()
    build_cpu = _cpu() - c0
    rows = []
    for kind, cin, cout, res_in in stylegan2_layer_shapes((256, 512, 1024)):
        h, w = _reduced_size(cin, cout, kind[2], res_in)
        batch = 2 if cin * cout <= 128 * 128 else 1
        noise = "scalar" if kind[0] == "torgb1x1" else "full"
        rows.append(measure(exe, kind, batch, cin, cout, h, w, noise, seed=cin + cout))
        print(rows[-1], flush=True)
    for cin, cout in ((3072, 4), (4096, 3), (3073, 4), (4097, 3)):
        rows.append(measure(exe, LAYER_KINDS[2], 1, cin, cout, 3, 5, "scalar", seed=cin))
    summary = {
        "max_rel_l2": {p: max(r[f"{p}_rel_l2"] for r in rows) for p in ("fp32", "fp16")},
        "tolerance": {p: tolerance("emulated", p) for p in ("fp32", "fp16")},
        "emulator_build_cpu_s": round(build_cpu, 1),
        "cases_cpu_s": round(sum(r["fp32_cpu_s"] + r["fp16_cpu_s"] for r in rows), 1),
        "wall_s": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, shared 2-vCPU VM with other (niced) jobs; CPU seconds are per process",
        "command": "python3 benchmarks/kernel_emulation_report.py --out " + str(args.out),
    }
    args.out.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
