"""parity.compare / Tolerance / check against hand-computed numbers (the metric code is what every gate rests on)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from restyle_rt import parity
from restyle_rt.errors import ParityError

pytestmark = pytest.mark.unit


def test_compare_by_hand():
    r = parity.compare(np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 3.5]))
    # |d| = [0, 2, 0.5]; mse = (4 + 0.25) / 3; ||b|| = sqrt(1 + 16 + 12.25)
    assert r.max_abs == 2.0 and r.mean_abs == pytest.approx(2.5 / 3, abs=1e-15)
    assert r.rel_l2 == pytest.approx(math.sqrt(4.25) / math.sqrt(29.25), rel=1e-12)
    assert r.psnr_db == pytest.approx(10 * math.log10(4 / (4.25 / 3)), rel=1e-12)
    assert r.worst_index == (1,)


def test_compare_peak_to_peak_and_worst_index_nd():
    a = np.zeros((2, 3), np.float32)
    a[1, 2] = 0.5
    r = parity.compare(a, np.zeros((2, 3)), peak_to_peak=1.0)
    assert r.worst_index == (1, 2)
    assert r.psnr_db == pytest.approx(10 * math.log10(1 / (0.25 / 6)), rel=1e-12)
    assert r.rel_l2 == 0.5  # zero reference: the absolute L2 norm of the difference


def test_compare_identical_and_float64():
    x = np.array([1e8 + 1, 1.0], np.float64)
    r = parity.compare(x, x.copy())
    assert r.max_abs == 0 and r.rel_l2 == 0 and r.psnr_db == math.inf
    r = parity.compare(np.float32([16777217.0]), np.float64([16777217.0]))  # float32 rounds it to 2**24
    assert r.max_abs == 1.0


def test_compare_empty_and_small_reference():
    r = parity.compare(np.zeros((0, 3)), np.zeros((0, 3)))
    assert (r.max_abs, r.mean_abs, r.rel_l2, r.psnr_db, r.worst_index) == (0.0, 0.0, 0.0, math.inf, ())
    # a reference of norm 0.5 (< 1) is still divided by: relative, not absolute
    assert parity.compare(np.array([1.0]), np.array([0.5])).rel_l2 == 1.0


def test_compare_shape_mismatch():
    with pytest.raises(ParityError, match=r"actual \[2\] vs reference \[3\]"):
        parity.compare(np.zeros(2), np.zeros(3))


def test_tolerance_bounds_inclusive_and_nan_fails():
    tol = parity.Tolerance(1e-3, 40.0)
    rep = parity.Report(0, 0, 1e-3, 40.0, ())
    assert tol.check(rep) is None
    assert "rel-L2" in tol.check(parity.Report(0, 0, 1.1e-3, 50.0, ()))
    assert "PSNR 39.9 dB < 40.0 dB" == tol.check(parity.Report(0, 0, 1e-4, 39.9, ()))
    assert tol.check(parity.Report(0, 0, float("nan"), 50.0, ())) is not None
    assert tol.check(parity.Report(0, 0, 1e-4, float("nan"), ())) is not None
    assert parity.Tolerance(1e-3).check(parity.Report(0, 0, 1e-4, -10.0, ())) is None  # no PSNR bound


def test_check_lists_every_failure_and_returns_reports():
    ref = {"image": np.ones(4), "feedback": np.ones(4)}
    ok = parity.check("ort", "fp32", {"image": np.ones(4), "feedback": np.ones(4)}, ref)
    assert set(ok) == {"image", "feedback"} and ok["image"]["rel_l2"] == 0.0 and ok["image"]["worst_index"] == [0]
    bad = {"image": np.ones(4) * 1.1, "feedback": np.ones(4) * 1.2}
    with pytest.raises(ParityError) as e:
        parity.check("ort", "fp32", bad, ref)
    msg = str(e.value)
    assert msg.startswith("ort fp32 parity failed: ") and "image: rel-L2 0.1" in msg and "feedback: rel-L2 0.2" in msg
    assert "; feedback: rel-L2" in msg  # one failure per output, "; "-separated


def test_unknown_tolerance_names_the_key():
    with pytest.raises(KeyError, match="no tolerance for .'ort', 'fp8', 'image'.; add one to parity.TOLERANCES"):
        parity.tolerance("ort", "fp8", "image")


def test_table_entries_are_measured_and_fp16_is_separate():
    for (kind, precision, output), tol in parity.TOLERANCES.items():
        assert "measured" in tol.note, (kind, precision, output)
        assert 0 < tol.rel_l2 < 1
        if precision == "fp16":
            assert "fp16" in kind or "proxy" in kind
    fp32 = {v for (k, p, _), v in parity.TOLERANCES.items() if p == "fp32"}
    assert all(parity.TOLERANCES[key] not in fp32 for key in parity.TOLERANCES if key[1] == "fp16")


def test_report_to_dict_is_plain_json():
    d = parity.compare(np.float32([1, 2]), np.float32([1, 3])).to_dict()
    assert d == {
        "max_abs": 1.0,
        "mean_abs": 0.5,
        "rel_l2": pytest.approx(1 / math.sqrt(10)),
        "psnr_db": pytest.approx(10 * math.log10(8)),
        "worst_index": [1],
    }
    assert all(type(v) in (float, list) for v in d.values())
