"""Calibration plots (``int8/*.png``) from a ``manifest["int8"]`` record: written, readable, not blank."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from restyle_rt.calibration import plots
from restyle_rt.manifest import Int8Record

pytestmark = pytest.mark.unit


def _rows(scale: float, psnr0: float):
    return [
        {"step": t, "latent_rel_l2": scale * t, "image_rel_l2": scale, "image_psnr_db": psnr0 - 3 * t}
        for t in range(1, 6)
    ]


def _record() -> Int8Record:
    curve = [
        {
            "kept": k,
            "worst_latent_rel_l2": 0.2 / (k + 1),
            "worst_image_psnr_db": 12.0 + 2 * k,
            "rows": _rows(0.04 / (k + 1), 30),
        }
        for k in range(5)
    ]
    identical = [dict(r, image_psnr_db=None) for r in _rows(0.0, 0)]  # PSNR None: identical images
    return Int8Record.from_dict(
        {
            "ship_bar": {"latent_rel_l2": 0.05, "image_psnr_db": 28.0, "rule": "every step"},
            "keep_curve": {"encoder": curve, "synthesis/odd name": curve[:3]},
            "kept_layers": {"encoder": ["a", "b"], "synthesis/odd name": []},
            "accuracy": {
                "encoder": {"cpu": _rows(0.01, 40), "trt": _rows(0.02, 38)},
                "encoder (step-1-only calibration)": {"cpu": _rows(0.03, 35)},
                "encoder+synthesis": {"cpu": identical},
            },
        }
    )


def test_plots_from_a_synthetic_record(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    written = plots.write_plots(_record(), tmp_path)
    assert sorted(p.name for p in written) == [
        "accuracy.png",
        "encoder.keep_curve.png",
        "synthesis_odd_name.keep_curve.png",
    ]
    for p in written:
        assert p.parent == tmp_path and p.stat().st_size > 5000
        a = np.asarray(Image.open(p).convert("RGB"))
        assert a.shape[0] > 300 and a.shape[1] > 800
        assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # axes, lines, text: not a blank canvas
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temporaries left


def test_no_curve_no_accuracy_no_plot(tmp_path):
    pytest.importorskip("matplotlib")
    assert plots.write_plots(Int8Record.from_dict({"keep_curve": {"encoder": []}, "accuracy": {}}), tmp_path) == []


def test_without_matplotlib_nothing_is_written(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError):
        plots.write_plots(_record(), tmp_path)
    caplog.set_level("INFO", logger="restyle_rt")
    assert plots.write_plots_if_available(_record(), tmp_path) == []
    assert "matplotlib not installed" in caplog.text and not any(tmp_path.iterdir())
