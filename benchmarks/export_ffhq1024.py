"""Record a full FFHQ-size export (pSp IR-SE50, 1024, S=18): wall time and peak RSS of each step.

Usage::

    python3 benchmarks/export_ffhq1024.py [--out benchmarks/cpu/export_ffhq1024.json]

Each step runs as its own ``restyle-rt`` subprocess, so its peak RSS (``wait4`` rusage) is its own. The model is a
random-weight checkpoint in the official format (cost depends on the architecture, not the weight values). It is
written to the bench preset cache (``$RESTYLE_RT_CACHE/presets/ffhq-1024``), which ``restyle-rt bench --preset
ffhq-1024`` then reuses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run(cmd):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return {
        "command": " ".join(cmd),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gib": round(ru.ru_maxrss / 2**20, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/cpu/export_ffhq1024.json")
    args = ap.parse_args()
    cache = Path(os.environ.get("RESTYLE_RT_CACHE", Path.home() / ".cache" / "restyle-rt")) / "presets" / "ffhq-1024"
    cache.mkdir(parents=True, exist_ok=True)
    ckpt, art = cache / "checkpoint.pt", cache / "artifacts"
    steps = {
        "make_checkpoint": run(["restyle-rt", "make-checkpoint", str(ckpt), "--preset", "ffhq-1024"]),
        "export": run(["restyle-rt", "export", str(ckpt), "--out", str(art), "--force", "--no-progress"]),
    }
    manifest = json.loads((art / "manifest.json").read_text())
    from restyle_rt.bench.runner import machine_info

    rec = {
        "what": "full FFHQ-1024 export (pSp IR-SE50, S=18), random weights in the official format",
        "machine": machine_info(threads=os.cpu_count()),
        "steps": steps,
        "checkpoint_bytes": ckpt.stat().st_size,
        "graph_bytes": {g: v["bytes"] for g, v in manifest["graphs"].items()},
        "parity": manifest["parity"],
        "versions": manifest["versions"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(steps, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
