"""OpenVINO ``precision="auto"``: the fastest precision whose recorded ship-bar verdict holds on this CPU's BF16
path, else FP32 (no OpenVINO device needed: the rule only)."""

import logging

import pytest

from restyle_rt import parity
from restyle_rt.errors import InputError
from restyle_rt.runtime import hostinfo
from restyle_rt.runtime.backends import openvino as ov_backend


@pytest.fixture
def cpu(monkeypatch):
    def set_cpu(path: str):
        monkeypatch.setattr(ov_backend, "cpu_has_bf16", lambda: bool(path))
        monkeypatch.setattr(hostinfo, "bf16_path", lambda: path)

    return set_cpu


@pytest.mark.parametrize("path, expect", [("avx512_bf16", "mixed"), ("amx_bf16", "fp32"), ("", "fp32")])
def test_auto_takes_only_what_was_measured_on_this_bf16_path(cpu, caplog, path, expect):
    cpu(path)
    with caplog.at_level(logging.INFO, logger="restyle_rt"):
        assert ov_backend.resolve_precision("auto") == expect
    said = caplog.text
    assert f"precision auto -> {expect}" in said
    if path == "amx_bf16":  # measured on AVX-512 BF16 only: not trusted on AMX
        assert "mixed: ship bar not measured on a amx_bf16 CPU (measured on avx512_bf16)" in said
    if path == "avx512_bf16":
        assert "bf16: misses the ship bar: -0.84 dB vs target" in said


def test_auto_is_fp32_off_the_cpu(cpu):
    cpu("avx512_bf16")
    assert ov_backend.resolve_precision("auto", device="GPU") == "fp32"


def test_a_verdict_that_meets_the_bar_is_taken_fastest_first(cpu, monkeypatch):
    cpu("amx_bf16")
    monkeypatch.setitem(
        parity.SHIP_VERDICTS, ("openvino", "bf16"), {"amx_bf16": parity.ShipVerdict(-0.1, 45.0, "test")}
    )
    assert ov_backend.resolve_precision("auto") == "bf16"


@pytest.mark.parametrize("change, ref, meets", [(-0.2, 35.0, True), (-0.21, 50.0, False), (0.5, 34.9, False)])
def test_ship_verdict_bar(change, ref, meets):
    assert parity.ShipVerdict(change, ref, "x").meets is meets


def test_explicit_precisions_pass_and_unknown_ones_fail():
    assert ov_backend.resolve_precision("mixed") == "mixed"
    with pytest.raises(InputError, match="precision must be one of"):
        ov_backend.resolve_precision("fp8")


def test_bf16_path_from_flags(monkeypatch):
    for flags, path in (({"avx512_bf16", "amx_bf16"}, "amx_bf16"), ({"avx512_bf16"}, "avx512_bf16"), (set(), "")):
        monkeypatch.setattr(hostinfo, "cpu_flags", lambda f=flags: frozenset(f))
        assert hostinfo.bf16_path() == path


def test_recorded_verdicts_are_the_benchmarked_ones():
    """parity.SHIP_VERDICTS' AVX-512 BF16 entries restate the batch-4 rows of the recorded fitted church-256 run
    (benchmarks/cpu/church-256-fitted-mixed.json): same figures to their printed precision, same verdict."""
    import json
    from pathlib import Path

    run = json.loads((Path(__file__).parents[2] / "benchmarks/cpu/church-256-fitted-mixed.json").read_text())
    rows = {(r["backend"], r["precision"]): r["accuracy"] for r in run["results"] if r["batch"] == 4}
    for key, by_path in parity.SHIP_VERDICTS.items():
        v, acc = by_path["avx512_bf16"], rows[key]
        assert v.target_change_db == pytest.approx(acc["target_psnr_change_db"][-1], abs=0.005)
        assert v.ref_psnr_db == pytest.approx(acc["image_psnr_db"][-1], abs=0.05)
        assert v.meets is acc["meets_bar"]
