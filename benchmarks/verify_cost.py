"""Cost of verifying artifacts' sha256 at load (restyle_rt.artifacts.verify_file), cold and remembered.

Files of the byte sizes of the church-256 and ffhq-1024 exports (benchmarks/cpu/*.json ``graph_bytes``) are
written with random content (hashing cost depends on size only), then verified twice: the first time hashes,
the second finds the stat-keyed marker. Usage: python benchmarks/verify_cost.py OUT.json [SCRATCH_DIR]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from restyle_rt import artifacts

SIZES = {"church-256": 751_566_411, "ffhq-1024": 957_499_216}  # graph_bytes of the committed CPU benchmarks


def main(out: str, scratch: str | None = None) -> None:
    rows = {}
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        os.environ["RESTYLE_RT_CACHE"] = str(Path(d) / "cache")
        for name, size in SIZES.items():
            p = Path(d) / f"{name}.bin"
            with open(p, "wb") as f:
                left = size
                while left:
                    n = min(left, 64 << 20)
                    f.write(os.urandom(n))
                    left -= n
            sha = artifacts.sha256_file(p)  # the expected hash (and a page-cache warm-up where memory allows)
            t0 = time.perf_counter()
            artifacts.verify_file(p, sha)
            t1 = time.perf_counter()
            artifacts.verify_file(p, sha)
            t2 = time.perf_counter()
            rows[name] = {
                "bytes": size,
                "first_load_s": round(t1 - t0, 3),
                "remembered_s": round(t2 - t1, 5),
                "GB_per_s": round(size / (t1 - t0) / 1e9, 2),
            }
            p.unlink()
    doc = {"what": __doc__.splitlines()[0], "machine": "2-vCPU VM shared with other (niced) jobs", "results": rows}
    Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
