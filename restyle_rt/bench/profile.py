"""Per-node profile of the two ONNX graphs under ONNX Runtime (``SessionOptions.enable_profiling``).

The sessions are made with the ort backend's CPU settings (all graph optimisations, ``threads`` intra-op
threads, sequential execution); the residual loop runs ``n_iters`` steps after one untimed warm-up step; the
profiler's ``Node`` events are summed by operator type and by node, per graph. The raw traces (Chrome trace
format: open them in https://ui.perfetto.dev or chrome://tracing) are kept, one file per graph.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger("restyle_rt")


def _session(path: Path, threads: int, prefix: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def summarize_events(events: list[dict], top: int = 12) -> dict:
    """Sum the profiler's ``Node`` kernel events (``*_kernel_time``) by op type and by node name.

    Returns:
        ``{"total_ms", "by_op": [{"op", "ms", "share", "count"}], "top_nodes": [{"node", "op", "ms"}]}``.
    """
    by_op: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    by_node: dict[str, float] = defaultdict(float)
    node_op: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        ms = e.get("dur", 0) / 1000.0
        by_op[op] += ms
        count[op] += 1
        by_node[node] += ms
        node_op[node] = op
    total = sum(by_op.values())
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    nodes = sorted(by_node.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total_ms": total,
        "by_op": [{"op": k, "ms": v, "share": v / total if total else 0.0, "count": count[k]} for k, v in ops],
        "top_nodes": [{"node": k, "op": node_op[k], "ms": v} for k, v in nodes],
    }


def profile_ort(
    artifacts_dir: os.PathLike,
    batch: int,
    n_iters: int,
    threads: int,
    trace_dir: os.PathLike | None = None,
    trace_stem: str = "ort-profile",
) -> dict:
    """Profile ``n_iters`` loop steps at ``batch``; returns ``{"batch", "iters", "threads", "traces", graph:
    summary}``.

    Each graph's summary covers all its calls after the warm-up step (ms summed over ``n_iters`` calls). The raw
    traces are kept as ``trace_dir/<trace_stem>.<graph>.json`` (``traces``: graph -> path); without ``trace_dir``,
    in a new directory under the system's temporary directory.
    """
    from .. import artifacts, fsio
    from .runner import synthetic_images

    art = artifacts.load(artifacts_dir)
    x = synthetic_images(batch, art.spec.input_hw)  # [B, 3, H, W]
    w = np.ascontiguousarray(np.broadcast_to(art.latent_avg, (batch, *art.latent_avg.shape)))  # [B, S, 512]
    y = np.ascontiguousarray(np.broadcast_to(art.avg_feedback, (batch, *art.avg_feedback.shape)))
    out = {"batch": batch, "iters": n_iters, "threads": threads, "traces": {}}
    keep = Path(trace_dir) if trace_dir is not None else Path(tempfile.mkdtemp(prefix="restyle-rt-ort-profile-"))
    with tempfile.TemporaryDirectory() as d:
        enc = _session(art.graph_path("encoder"), threads, str(Path(d) / "encoder"))
        syn = _session(art.graph_path("synthesis"), threads, str(Path(d) / "synthesis"))
        for _ in range(n_iters + 1):  # the first step is a warm-up (arena growth, weight pre-packing)
            w = enc.run(["latent_next"], {"image": x, "feedback": y, "latent": w})[0]
            _, y = syn.run(["image", "feedback"], {"latent": w})
        for g, s in (("encoder", enc), ("synthesis", syn)):
            raw = Path(s.end_profiling()).read_bytes()
            out[g] = summarize_events(_after_first_run(json.loads(raw)))
            trace = fsio.write_bytes(keep / f"{trace_stem}.{g}.json", raw)  # kept for Perfetto
            out["traces"][g] = str(trace)
    return out


def _after_first_run(events: list[dict]) -> list[dict]:
    """The events from the second ``model_run`` on (the first is the warm-up step)."""
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    return [e for e in events if e.get("ts", 0) >= runs[1]] if len(runs) > 1 else events


def profile_table(prof: dict, top: int = 8) -> str:
    """Markdown: the top op types of each graph by kernel time."""
    lines = [
        f"ORT profile, batch {prof['batch']}, {prof['iters']} steps, {prof['threads']} threads "
        "(kernel time summed over the steps)",
        "",
        "| graph | op | ms | share | nodes run |",
        "|---|---|---|---|---|",
    ]
    for g in ("encoder", "synthesis"):
        for o in prof[g]["by_op"][:top]:
            lines.append(f"| {g} | {o['op']} | {o['ms']:.1f} | {100 * o['share']:.1f} % | {o['count']} |")
    return "\n".join(lines)
