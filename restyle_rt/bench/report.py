"""Benchmark output: the JSON document, a markdown table and the latency-vs-batch plot.

JSON schema (``SCHEMA_VERSION`` 1)::

    {"schema": 1,
     "machine": {"cpu_model", "logical_cpus", "cpus_available", "load_avg", "threads", "versions", ...},
     "command": "restyle-rt bench ...",
     "source": {"artifacts", "checkpoint", "preset", "spec", "graph_bytes"},
     "results": [{"backend", "precision", "kind", "batch", "iters", "p50_s", "p90_s", "p99_s", "p50_per_image_s",
                  "p90_per_image_s", "p99_per_image_s", "images_per_s",
                  "stages": {"encoder", "synthesis", "copies", "glue"}, "peak_rss_mb",
                  "accuracy": {"reference", "latent_rel_l2": [per step], "image_rel_l2": [...],
                               "image_psnr_db": [...], on a fitted checkpoint also "target_psnr_db",
                               "reference_target_psnr_db", "target_psnr_change_db", "truth_latent_rms",
                               "reference_truth_latent_rms" [per step] and "meets_bar"} or null, ...}],
     "memory": [...]}      (only with --memory; see restyle_rt.bench.memory)

Latencies are seconds per batch loop unless named ``*_per_image_s`` (``p50_per_image_s`` is ``p50_s / batch``;
records written before it was the only name also carry it as ``seconds_per_image``); ``images_per_s`` is
``batch / p50_s``. ``stages`` are mean seconds per batch loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("restyle_rt")

SCHEMA_VERSION = 1
REQUIRED_FIELDS = (
    "backend",
    "batch",
    "iters",
    "p50_s",
    "p90_s",
    "p99_s",
    "p50_per_image_s",
    "images_per_s",
    "stages",
    "peak_rss_mb",
)


def document(machine: dict, command: str, source: dict, results: list[dict], memory: list[dict] | None = None) -> dict:
    """Assemble the JSON document (see the module docstring)."""
    doc = {
        "schema": SCHEMA_VERSION,
        "machine": machine,
        "command": command,
        "source": source,
        "results": results,
    }
    if memory is not None:
        doc["memory"] = memory
    return doc


def write_json(doc: dict, path: os.PathLike) -> Path:
    """Write ``doc`` to ``path`` (parents created); returns the path."""
    from ..fsio import write_json as _atomic_json

    return _atomic_json(path, doc)


def _speedups(results: Sequence[dict], reference: str) -> dict[tuple, float]:
    ref = {(r["batch"], r["iters"]): r["p50_per_image_s"] for r in results if r["backend"] == reference}
    return {
        _key(r): ref[(r["batch"], r["iters"])] / r["p50_per_image_s"]
        for r in results
        if (r["batch"], r["iters"]) in ref
    }


def _key(r: dict) -> tuple:
    return r["backend"], r.get("precision"), r["batch"], r["iters"]


def _accuracy_cells(r: dict) -> list[str]:
    """Worst-over-steps latent rel-L2 and lowest image PSNR, or dashes when not measured."""
    acc = r.get("accuracy")
    if not acc:
        return ["-", "-"]
    psnr = [v for v in acc["image_psnr_db"] if v is not None]
    return [f"{max(acc['latent_rel_l2']):.2e}", f"{min(psnr):.1f}" if psnr else "inf"]


def _target_cells(r: dict) -> list[str]:
    """PSNR against the target and its change relative to the FP32 reference (last step), and the ship bar."""
    acc = r.get("accuracy") or {}
    if not acc.get("target_psnr_db"):
        return ["-", "-", "-"]
    bar = {True: "meets", False: "fails", None: "-"}[acc.get("meets_bar")]
    return [f"{acc['target_psnr_db'][-1]:.2f}", f"{acc['target_psnr_change_db'][-1]:+.2f}", bar]


def _last_ref_psnr(r: dict, cap: float) -> float | None:
    """The last step's image PSNR against the FP32 reference (``cap`` when identical), None if not measured."""
    acc = r.get("accuracy")
    if not acc:
        return None
    v = acc["image_psnr_db"][-1]
    return cap if v is None else min(float(v), cap)


def _g(v: float) -> str:
    """4 significant digits, no exponent for the usual range."""
    return f"{v:.4g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.2e}"


def markdown_table(results: Sequence[dict], reference: str = "torch-official") -> str:
    """One row per result: latency per image and per batch, throughput, stages, peak RSS, and the speed-up
    against ``reference`` (when it was run)."""
    sp = _speedups(results, reference)
    steps = any("steps_used_mean" in r for r in results)
    head = [
        "backend",
        "precision",
        "batch",
        "iters",
        "s/image (p50)",
        "p50 s/batch",
        "p90",
        "p99",
        "images/s",
        "encoder s",
        "synthesis s",
        "copies s",
        "glue s",
        "peak RSS MB",
        "latent rel-L2 (worst step)",
        "image PSNR dB (worst step)",
    ]
    target = any((r.get("accuracy") or {}).get("target_psnr_db") for r in results)
    if target:
        head += ["PSNR vs target dB (last step)", "change vs FP32 dB", "ship bar"]
    if sp:
        head.append(f"x vs {reference}")
    if steps:
        head.append("steps used (mean)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        st = r.get("stages", {})
        row = [r["backend"], str(r.get("precision") or "-"), str(r["batch"]), str(r["iters"])]
        row += [_g(r[k]) for k in ("p50_per_image_s", "p50_s", "p90_s", "p99_s", "images_per_s")]
        row += [_g(st.get(k, float("nan"))) for k in ("encoder", "synthesis", "copies", "glue")]
        row.append("-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}")
        row += _accuracy_cells(r)
        if target:
            row += _target_cells(r)
        if sp:
            v = sp.get(_key(r))
            row.append("-" if v is None else f"{v:.2f}")
        if steps:
            row.append(f"{r['steps_used_mean']:.2f}" if "steps_used_mean" in r else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def memory_table(memory: Sequence[dict]) -> str:
    """Markdown rows for the isolated memory measurements."""
    head = [
        "backend",
        "precision",
        "batch",
        "iters",
        "weights MB (ONNX files)",
        "I/O buffers MB",
        "RSS after import MB",
        "peak RSS MB",
        "runtime peak MB (peak - import)",
        "ratio to weights+buffers",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in memory:
        lines.append(
            "| "
            + " | ".join(
                [
                    m["backend"],
                    m.get("precision") or "",
                    str(m["batch"]),
                    str(m["iters"]),
                    f"{m['weights_mb']:.1f}",
                    f"{m['buffers_mb']:.1f}",
                    f"{m['rss_import_mb']:.0f}",
                    f"{m['peak_rss_mb']:.0f}",
                    f"{m['runtime_peak_mb']:.0f}",
                    f"{m['ratio']:.2f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def plot(results: Sequence[dict], path: os.PathLike, title: str = "") -> Path | None:
    """Latency per image (p50) vs batch, one line per (backend, iters); PNG at ``path``.

    Returns:
        The path, or None when matplotlib is not installed (logged with the fix).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("--plot: matplotlib is not installed; pip install 'restyle-rt[bench]' (no plot written)")
        return None
    iters = sorted({r["iters"] for r in results})
    with_acc = any(r.get("accuracy") for r in results)
    fig, axes = plt.subplots(1, 2 if with_acc else 1, figsize=(13 if with_acc else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for name, prec in dict.fromkeys((r["backend"], r.get("precision")) for r in results):
        for n in iters:
            pts = sorted(
                (r["batch"], r["p50_per_image_s"])
                for r in results
                if r["backend"] == name and r.get("precision") == prec and r["iters"] == n
            )
            if pts:
                label = name if prec in (None, "fp32") else f"{name} {prec}"
                label = label if len(iters) == 1 else f"{label}, {n} iters"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("batch")
    ax.set_ylabel("seconds per image (p50)")
    ax.set_xticks(sorted({r["batch"] for r in results}))
    ax.set_title(title or "restyle-rt bench")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if with_acc:
        _accuracy_panel(axes[0][1], results)
    from ..fsio import atomic_open

    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _accuracy_panel(ax, results: Sequence[dict], cap: float = 80.0) -> None:
    """Speed against accuracy: one point per result (seconds per image, last step's image PSNR against the FP32
    loop), the ship bar's PSNR line drawn; results that fail the bar are hollow and named so."""
    from ..parity import SHIP_REF_PSNR_DB as BAR_REF_PSNR_DB
    from ..parity import SHIP_TARGET_LOSS_DB as BAR_TARGET_LOSS_DB

    for r in results:
        y = _last_ref_psnr(r, cap)
        if y is None:
            continue
        acc = r["accuracy"]
        ok = acc.get("meets_bar")
        if ok is None:
            ok = y >= BAR_REF_PSNR_DB  # random weights: only the image bar can be judged
        prec = r.get("precision")
        label = f"{r['backend']}{'' if prec in (None, 'fp32') else ' ' + prec} b{r['batch']} n{r['iters']}"
        if acc.get("target_psnr_change_db"):
            label += f" ({acc['target_psnr_change_db'][-1]:+.2f} dB vs target)"
        if not ok:
            label += " FAILS"
        ax.scatter(
            [r["p50_per_image_s"]],
            [y],
            marker="o",
            s=40,
            label=label,
            facecolors="none" if not ok else None,
            edgecolors="C3" if not ok else None,
        )
    ax.axhline(
        BAR_REF_PSNR_DB,
        color="C3",
        linestyle="--",
        linewidth=1,
        label=f"ship bar: >= {BAR_REF_PSNR_DB:g} dB vs FP32, <= {BAR_TARGET_LOSS_DB:g} dB lost vs target",
    )
    ax.set_xlabel("seconds per image (p50)")
    ax.set_ylabel(f"image PSNR vs FP32 loop, last step (dB; identical = {cap:g})")
    ax.set_title("speed and accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
