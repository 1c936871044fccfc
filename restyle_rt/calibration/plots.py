"""PNG plots of a calibration record (``manifest["int8"]``, :class:`restyle_rt.manifest.Int8Record`), written next to
the INT8 graphs.

* ``<graph>.keep_curve.png``: the sweep's keep curve, worst latent rel-L2 and worst image PSNR of the loop on the
  calibration images against the number of most-sensitive layers kept in FP32, the kept count marked.
* ``accuracy.png``: per loop step on the held-out images, latent rel-L2 and image PSNR against the FP32 loop, one
  line per configuration and encoding.

Both draw the ship bar. matplotlib (the ``[bench]`` extra) is imported only here, without pyplot (no global state).
"""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path

from .. import fsio
from ..manifest import Int8Record

log = logging.getLogger("restyle_rt")


def _figure(ncols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * ncols, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    fsio.write_bytes(path, buf.getbuffer())
    return path


def _psnr(v) -> float:
    return math.nan if v is None else float(v)  # None: identical images (infinite PSNR), not drawn


def _bar_lines(ax_lat, ax_psnr, bar: dict) -> None:
    if "latent_rel_l2" in bar:
        ax_lat.axhline(bar["latent_rel_l2"], color="crimson", ls="--", lw=1, label=f"ship bar {bar['latent_rel_l2']:g}")
    if "image_psnr_db" in bar:
        ax_psnr.axhline(
            bar["image_psnr_db"], color="crimson", ls="--", lw=1, label=f"ship bar {bar['image_psnr_db']:g} dB"
        )


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_if_positive(ax, values) -> None:
    if any(v > 0 for v in values if not math.isnan(v)):
        ax.set_yscale("log")


def keep_curve_plot(graph: str, curve: list[dict], kept: int | None, bar: dict, path: Path) -> Path:
    """The keep curve of one graph (see the module docstring)."""
    fig, (ax_lat, ax_psnr) = _figure(2)
    k = [p["kept"] for p in curve]
    lat = [float(p["worst_latent_rel_l2"]) for p in curve]
    psnr = [_psnr(p.get("worst_image_psnr_db")) for p in curve]
    ax_lat.plot(k, lat, "o-", ms=3, label="worst step")
    ax_psnr.plot(k, psnr, "o-", ms=3, color="tab:green", label="worst step")
    _log_if_positive(ax_lat, lat)
    _bar_lines(ax_lat, ax_psnr, bar)
    for ax, what in ((ax_lat, "latent rel-L2 vs FP32"), (ax_psnr, "image PSNR vs FP32 (dB)")):
        if kept is not None:
            ax.axvline(kept, color="grey", ls=":", lw=1, label=f"kept: {kept}")
        ax.set_xlabel("most sensitive layers kept in FP32")
        _integer_x(ax)
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{graph}: keep curve (calibration images)")
    return _save(fig, path)


def accuracy_plot(accuracy: dict, bar: dict, path: Path) -> Path:
    """Per-step latent rel-L2 and image PSNR of every configuration and encoding (held-out images)."""
    fig, (ax_lat, ax_psnr) = _figure(2)
    lat_all = []
    for label, encodings in accuracy.items():
        for enc, rows in encodings.items():
            steps = [r["step"] for r in rows]
            lat = [float(r["latent_rel_l2"]) for r in rows]
            lat_all += lat
            name = f"{label} [{enc}]"
            ax_lat.plot(steps, lat, "o-", ms=3, label=name)
            ax_psnr.plot(steps, [_psnr(r.get("image_psnr_db")) for r in rows], "o-", ms=3, label=name)
    _log_if_positive(ax_lat, lat_all)
    _bar_lines(ax_lat, ax_psnr, bar)
    for ax, what in ((ax_lat, "latent rel-L2 vs FP32"), (ax_psnr, "image PSNR vs FP32 (dB)")):
        ax.set_xlabel("loop step")
        _integer_x(ax)
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("INT8 loop accuracy per step (held-out images)")
    return _save(fig, path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


def write_plots(record: Int8Record, out_dir) -> list[Path]:
    """Write the keep-curve and accuracy plots of a ``manifest["int8"]`` record into ``out_dir``.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib  # noqa: F401  (fail early, before any file)

    out = Path(out_dir)
    bar = {k: v for k, v in (record.ship_bar or {}).items() if isinstance(v, (int, float))}
    written = []
    for graph, curve in record.keep_curve.items():
        if curve:
            kept = record.kept_layers.get(graph)
            written.append(
                keep_curve_plot(
                    graph, curve, None if kept is None else len(kept), bar, out / f"{_safe(graph)}.keep_curve.png"
                )
            )
    if record.accuracy:
        written.append(accuracy_plot(record.accuracy, bar, out / "accuracy.png"))
    return written


def write_plots_if_available(record: Int8Record, out_dir) -> list[Path]:
    """:func:`write_plots`, or nothing when matplotlib is missing; a plot never fails a finished calibration."""
    try:
        paths = write_plots(record, out_dir)
    except ImportError:
        log.info("matplotlib not installed (the [bench] extra): no calibration plots")
        return []
    except Exception as e:  # noqa: BLE001 - the graphs and the manifest are already written
        log.warning("calibration plots not written: %s: %s", type(e).__name__, e)
        return []
    log.info("calibration plots: %s", ", ".join(p.name for p in paths))
    return paths
