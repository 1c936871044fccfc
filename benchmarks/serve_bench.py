"""Serving overhead: ``restyle-rt serve`` under closed-loop concurrency vs the in-process Inverter.

Run it in the serve venv (PyTriton needs numpy<2), under the bench lock, e.g.::

    flock /tmp/bench.lock .venv-serve/bin/python benchmarks/serve_bench.py --preset church-256 --iters 1 \
        --out benchmarks/cpu/serve-church-256

For each concurrency C, C client threads (tritonclient HTTP, one JPEG per request) send requests back to back to
a server on loopback for ``--requests-per-client`` rounds; latency is per request (send to answer). The in-process
baseline is the ideal batcher with no server: decode + ``Inverter.invert`` on min(C, profile max) images + uint8
conversion, repeated; its latency is that batch's time and its throughput images/s. Overhead = server p50 latency /
in-process batch time, and in-process / server throughput. No perf_analyzer here: the only ``perf-analyzer`` pip
can install on this machine is 0.1.0, an empty placeholder (2.60.0 is not installable here), so this is the
project's own bounded client.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(seed: int, size: int = 256) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) * rng.uniform(0.3, 1.0)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_server(art: Path, threads: int, delay_us: int, log: Path):
    http, grpc, metrics = _ports(3)
    cmd = [
        sys.executable,
        "-m",
        "restyle_rt.cli",
        "serve",
        str(art),
        "--port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--threads",
        str(threads),
        "--max-queue-delay-us",
        str(delay_us),
        "--timeout-ms",
        "0",
        "--max-queue-size",
        "256",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    import tritonclient.http as hc

    t0 = time.monotonic()
    client = hc.InferenceServerClient(f"127.0.0.1:{http}")
    while time.monotonic() - t0 < 300:
        if proc.poll() is not None:
            raise SystemExit(f"server died:\n{log.read_text()[-2000:]}")
        try:
            if client.is_model_ready("restyle"):
                break
        except Exception:
            pass
        time.sleep(0.5)
    client.close()
    return proc, f"127.0.0.1:{http}", time.monotonic() - t0


def client_loop(url: str, blobs, iters: int, rounds: int):
    import tritonclient.http as hc

    client = hc.InferenceServerClient(url, network_timeout=3600, connection_timeout=3600)
    lat, errors = [], []
    try:
        for k in range(rounds):
            b = blobs[k % len(blobs)]
            i = hc.InferInput("image_bytes", [1, 1], "BYTES")
            i.set_data_from_numpy(np.array([[b]], dtype=object))
            it = hc.InferInput("iters", [1, 1], "INT32")
            it.set_data_from_numpy(np.array([[iters]], np.int32))
            t = time.perf_counter()
            try:
                r = client.infer(
                    "restyle", [i, it], outputs=[hc.InferRequestedOutput("latents"), hc.InferRequestedOutput("image")]
                )
            except Exception as e:  # recorded, not hidden: the run goes on and the row counts it
                errors.append(str(e)[:200])
                continue
            lat.append(time.perf_counter() - t)
            assert r.as_numpy("latents") is not None
    finally:
        client.close()
    return lat, errors


def bench_server(url, blobs, c, iters, rounds):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(c) as pool:
        parts = [f.result() for f in [pool.submit(client_loop, url, blobs, iters, rounds) for _ in range(c)]]
    wall = time.perf_counter() - t0
    lats = [x for p in parts for x in p[0]]
    errors = [x for p in parts for x in p[1]]
    nan = float("nan")
    return {
        "requests": len(lats) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:3],
        "wall_s": wall,
        "images_per_s": len(lats) / wall,
        "p50_s": float(np.percentile(lats, 50)) if lats else nan,
        "p99_s": float(np.percentile(lats, 99)) if lats else nan,
    }


def bench_inprocess(inv, blobs, c, iters, reps):
    from restyle_rt.runtime import io as rio

    b = min(c, inv.profile.max)
    times = []
    for k in range(reps):
        t = time.perf_counter()
        imgs = [rio.decode_image(blobs[(k * b + j) % len(blobs)]) for j in range(b)]
        res = inv.invert(imgs, n_iters=iters)
        _ = [rio.to_uint8(x) for x in res.images]
        times.append(time.perf_counter() - t)
    return {
        "batch": b,
        "reps": reps,
        "batch_p50_s": float(np.median(times)),
        "images_per_s": b / float(np.median(times)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="church-256")
    ap.add_argument("--artifacts", default=None, help="artifacts dir (default: the preset's, built on first use)")
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--requests-per-client", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT threads in both the server and the baseline")
    ap.add_argument("--max-queue-delay-us", type=int, default=20000)
    ap.add_argument("--out", required=True, help="output path stem (.json and .md are written)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from restyle_rt import Inverter

    art = Path(args.artifacts) if args.artifacts else None
    if art is None:
        from restyle_rt.bench.presets import preset_dir

        art = preset_dir(args.preset) / "artifacts"
    blobs = [_jpeg(k) for k in range(16)]
    levels = [int(x) for x in args.concurrency.split(",")]
    out = Path(args.out)
    log = Path(tempfile.gettempdir()) / "serve_bench.server.log"
    proc, url, ready_s = start_server(art, args.threads, args.max_queue_delay_us, log)
    rows = []
    try:
        with Inverter.load(art, backend="ort", threads=args.threads) as inv:
            bench_inprocess(inv, blobs, 1, args.iters, 1)  # warm-up
            client_loop(url, blobs, args.iters, 1)  # warm-up (its errors, if any, show up in the rows)
            for c in levels:  # interleaved: in-process, then server, at each level
                load_before = os.getloadavg()[0]
                reps = max(2, args.requests_per_client * c // min(c, inv.profile.max) // 2)
                ip = bench_inprocess(inv, blobs, c, args.iters, reps)
                sv = bench_server(url, blobs, c, args.iters, args.requests_per_client)
                row = {
                    "concurrency": c,
                    "server": sv,
                    "inprocess": ip,
                    "load_before": load_before,
                    "load_after": os.getloadavg()[0],
                    "latency_ratio_p50": sv["p50_s"] / ip["batch_p50_s"],
                    "throughput_ratio": ip["images_per_s"] / sv["images_per_s"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    meta = {
        "command": " ".join(sys.argv),
        "artifacts": str(art),
        "iters": args.iters,
        "threads": args.threads,
        "server_ready_s": ready_s,
        "max_queue_delay_us": args.max_queue_delay_us,
        "machine": f"{platform.machine()} {os.cpu_count()} vCPU, shared with other (niced) jobs",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        (
            "| C | server img/s | server p50 s | server p99 s | errors | in-process batch | in-process img/s | "
            "batch p50 s | p50 ratio | throughput ratio |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, i = r["server"], r["inprocess"]
        lines.append(
            f"| {r['concurrency']} | {s['images_per_s']:.3f} | {s['p50_s']:.2f} | {s['p99_s']:.2f} | "
            f"{s['errors']}/{s['requests']} | "
            f"{i['batch']} | {i['images_per_s']:.3f} | {i['batch_p50_s']:.2f} | "
            f"{r['latency_ratio_p50']:.2f} | {r['throughput_ratio']:.2f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
