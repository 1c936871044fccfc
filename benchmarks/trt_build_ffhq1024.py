"""Build FFHQ-1024 pSp IR-SE50 (S=18) engines with TensorRT-RTX and record build time, engine sizes, peak RSS.

Usage::

    python benchmarks/trt_build_ffhq1024.py [--artifacts DIR] [--checkpoint CKPT] [--out JSON]

Without ``--artifacts`` it exports ``--checkpoint`` (default: a random-weight official-format checkpoint made by
``restyle_rt.export.fixtures``: build cost and engine size depend on the architecture, not the weight values).
Export and each precision's ``restyle-rt build`` run in their own subprocesses, and this parent imports nothing
heavy, so a build's ``wait4`` peak RSS is its own (Linux folds the parent's high-water mark into a child's
``ru_maxrss`` across fork+exec).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    from restyle_rt.bench.runner import machine_info

    return dict(machine_info(threads=os.cpu_count()), gpu="none (TensorRT-RTX ahead-of-time build on CPU)")


def export(ckpt: Path | None, out: Path) -> dict:
    """Make the checkpoint (if needed) and export it, in a child process; timings are kept next to the export."""
    code = (
        f"import json, sys, time; sys.path.insert(0, {str(Path(__file__).parent)!r}); import trt_build_ffhq1024 as b; "
        "print(json.dumps(b._export_here(*json.loads(sys.argv[1]))))"
    )
    arg = json.dumps([str(ckpt) if ckpt else None, str(out)])
    done = subprocess.run([sys.executable, "-c", code, arg], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"export failed:\n{done.stderr[-4000:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    (out / "bench-export.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _export_here(ckpt, out) -> dict:
    from restyle_rt.export import export_artifacts
    from restyle_rt.export.fixtures import make_checkpoint

    out = Path(out)
    t0 = time.perf_counter()
    if ckpt is None:
        ckpt = out.parent / "ffhq1024-random.pt"
        if not ckpt.exists():
            make_checkpoint(ckpt, encoder_type="BackboneEncoder", dataset_type="ffhq_encode", output_size=1024)
    t1 = time.perf_counter()
    export_artifacts(ckpt, out, opset=17, max_batch=8, overwrite=True, progress=False)
    return {
        "checkpoint": str(ckpt),
        "checkpoint_seconds": round(t1 - t0, 1),
        "export_seconds": round(time.perf_counter() - t1, 1),
    }


def build(art: Path, precision: str) -> dict:
    cmd = [sys.executable, "-m", "restyle_rt.cli", "build", str(art), "--precision", precision, "--rebuild"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}")
    return {
        "command": " ".join(cmd[1:]),
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "log": out.splitlines(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / ".cache" / "bench" / "ffhq1024-artifacts")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--note", default="", help="free-text run conditions recorded in the JSON")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trt_build_ffhq1024.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from restyle_rt import artifacts

    result = {
        "benchmark": "trt_build_ffhq1024",
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "machine": machine(),
        "note": args.note,
        "model": "pSp IR-SE50 BackboneEncoder, FFHQ, output 1024, S=18, random weights (official format)",
    }
    if not (args.artifacts / "manifest.json").exists():
        args.artifacts.parent.mkdir(parents=True, exist_ok=True)
        export(args.checkpoint, args.artifacts)
    if (args.artifacts / "bench-export.json").exists():
        result["export"] = json.loads((args.artifacts / "bench-export.json").read_text())
    art = artifacts.load(args.artifacts)
    result["onnx_bytes"] = {g: art.manifest.graphs[g].bytes for g in ("encoder", "synthesis")}  # + .data
    result["builds"] = {p: build(args.artifacts, p) for p in ("fp16", "fp32")}
    art = artifacts.load(args.artifacts)
    from restyle_rt.runtime.trt_compat import load_trt  # after the builds: keep the parent small

    info = load_trt()
    result["trt"] = {"flavour": info.flavour, "version": info.version}
    result["engines"] = [
        {
            k: r.to_dict()[k]
            for k in (
                "graph",
                "precision",
                "size_bytes",
                "build_seconds",
                "strongly_typed",
                "compute_capabilities",
                "profile",
                "trt_flavour",
                "trt_version",
            )
        }
        for r in art.manifest.engines
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                "engines": result["engines"],
                "builds": {p: {k: v for k, v in b.items() if k != "log"} for p, b in result["builds"].items()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
