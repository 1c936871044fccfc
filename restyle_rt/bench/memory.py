"""The runtime's peak memory against what it must hold: the two graphs' weights plus the loop's buffers.

Measured in a fresh interpreter per (backend, batch) so that nothing else this process loaded (torch
baselines, other backends, allocator caches) is counted: the child imports the runtime, records its RSS
(``rss_import``), opens the backend, runs one loop, and reports the kernel's lifetime high-water mark
(``VmHWM``). Then::

    runtime_peak = peak_rss - rss_import   (what the runtime added: weights, arenas, activations, I/O)
    ratio        = runtime_peak / (weights + buffers)

``weights`` is the size of the ONNX files (plus external-data files); ``buffers`` the host loop's arrays
(inputs, feedback, latents, the previous latents, images, and one set of graph outputs).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("restyle_rt")


def weights_bytes(artifacts_dir: os.PathLike) -> int:
    """Bytes of the two graphs the runtime loads (``encoder``, ``synthesis``) and their external-data files."""
    from ..artifacts import read_manifest

    root = Path(artifacts_dir)
    graphs = read_manifest(root).graphs
    return sum((root / name).stat().st_size for g in ("encoder", "synthesis") for name, _ in graphs[g].files())


def buffer_bytes(spec, batch: int) -> int:
    """Bytes of the host loop's arrays for ``batch`` images.

    See :func:`restyle_rt.runtime.loop.host_loop`.
    """
    h, w = spec.input_hw
    ih, iw = spec.image_hw
    per_image = (
        3 * 3 * h * w  # x, feedback, feedback output
        + 3 * spec.n_styles * 512  # latents, previous latents, latent_next output
        + 2 * 3 * ih * iw
    )  # images, image output
    return 4 * batch * per_image


def measure(
    artifacts_dir: os.PathLike,
    backend: str,
    batch: int,
    n_iters: int,
    threads: int,
    timeout: float = 1800,
    precision: str | None = None,
) -> dict:
    """Run :func:`_child` in a fresh interpreter and return its record (``precision`` as ``bench --precision``
    passes it: ``precision=`` to the backend; None for its default).

    Raises:
        RuntimeError: the child failed (its stderr tail is in the message).
    """
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "mem.json"
        args = [
            sys.executable,
            "-m",
            "restyle_rt.bench.memory",
            str(artifacts_dir),
            backend,
            str(batch),
            str(n_iters),
            str(threads),
            str(out),
            precision or "",
        ]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"memory measurement of {backend} {precision or ''} batch {batch} failed: {proc.stderr[-2000:]}"
            )
        return json.loads(out.read_text())


def measure_all(
    artifacts_dir: os.PathLike,
    backends: list[str],
    batches: list[int],
    n_iters: int,
    threads: int,
    precisions: list[str] | None = None,
) -> list[dict]:
    """:func:`measure` for every runtime backend, precision and batch (baselines are skipped: they are not the
    runtime). ``precisions`` are ``bench --precision``'s, planned as the timing runs are
    (:func:`restyle_rt.bench.targets.plan`)."""
    from .targets import BASELINES, plan

    recs = []
    for name, precision in plan([n for n in backends if n not in BASELINES], precisions):
        for b in batches:
            log.info("bench --memory: %s %s batch %d in a fresh process", name, precision or "", b)
            recs.append(measure(artifacts_dir, name, b, n_iters, threads, precision=precision))
    return recs


def _child(
    artifacts_dir: str, backend: str, batch: int, n_iters: int, threads: int, precision: str | None = None
) -> dict:
    import numpy as np

    from .. import artifacts
    from ..runtime.backends import backend_class
    from .runner import _status_kb, current_rss_mb, synthetic_images
    from .targets import RuntimeTarget

    backend_class(backend)  # imports the backend's module (onnxruntime, ...) before the baseline reading
    if backend == "ort":
        import onnxruntime  # noqa: F401
    art = artifacts.load(artifacts_dir)
    x = synthetic_images(batch, art.spec.input_hw)  # [B, 3, H, W]
    rss_import = current_rss_mb()
    target = RuntimeTarget(backend, art, threads, precision)  # threads and precision= as the timing runs pass them
    be = target.backend
    rss_loaded = current_rss_mb()
    res = be.run_loop(np.ascontiguousarray(x), n_iters)
    peak = _status_kb("VmHWM") / 1024
    w, buf = weights_bytes(artifacts_dir), buffer_bytes(art.spec, batch)
    be.close()
    mb = 2**20
    return {
        "backend": backend,
        "precision": target.precision,
        "batch": batch,
        "iters": n_iters,
        "threads": threads,
        "weights_mb": w / mb,
        "buffers_mb": buf / mb,
        "rss_import_mb": rss_import,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak,
        "runtime_peak_mb": peak - rss_import,
        "ratio": (peak - rss_import) / ((w + buf) / mb),
        "steps": int(res.steps_used.max()),
    }


if __name__ == "__main__":  # the child process of measure()
    a = sys.argv[1:]
    rec = _child(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), a[6] if len(a) > 6 and a[6] else None)
    Path(a[5]).write_text(json.dumps(rec))
