"""``precision="auto"`` trusts an INT8 record only where its accuracy was measured: this CPU model, within its bar."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from restyle_rt import artifacts
from restyle_rt.manifest import Int8Record
from restyle_rt.runtime import hostinfo
from restyle_rt.runtime.backends import ort as ort_backend
from restyle_rt.runtime.backends.ort import choose_precision, int8_trusted

pytestmark = pytest.mark.unit


def _record(**over):
    rows = [
        {"step": 1, "latent_rel_l2": 1e-2, "image_psnr_db": 40.0},
        {"step": 2, "latent_rel_l2": 1e-2, "image_psnr_db": 36.0},
    ]
    rec = {
        "graphs": {},
        "meets_ship_bar": {"encoder": True},
        "measured_on": hostinfo.machine_record(),
        "accuracy": {"encoder": {"cpu": rows}},
    }
    rec.update(over)
    return Int8Record.from_dict(rec)


def test_trusted_only_on_the_cpu_it_was_measured_on(monkeypatch):
    assert int8_trusted(_record()) == (True, "INT8 accuracy recorded within its ship bar on this CPU")
    ok, why = int8_trusted(_record(measured_on={"cpu": "AMD EPYC 9R14", "cpu_id": "another"}))
    assert not ok and "measured on AMD EPYC 9R14, not on this CPU" in why and "restyle-rt calibrate" in why
    ok, why = int8_trusted(_record(measured_on=None))  # a record from before the CPU was recorded
    assert not ok and "an unrecorded CPU" in why
    assert int8_trusted(_record(meets_ship_bar={"encoder": False}))[0] is False
    assert int8_trusted(None) == (False, "no INT8 graphs")
    low = _record(accuracy={"encoder": {"cpu": [{"step": 1, "latent_rel_l2": 1e-2, "image_psnr_db": 34.3}]}})
    ok, why = int8_trusted(low)  # within calibrate's per-step bar, not 35 dB from FP32 at the end
    assert not ok and "34.3 dB against FP32's; the ship bar asks >= 35 dB" in why
    assert int8_trusted(_record(accuracy={}))[0] is False  # an older record: not trusted
    both = _record(
        graphs={"encoder": {}, "synthesis": {}},  # with an INT8 synthesis, its loop's figures count
        accuracy={
            "encoder": {"cpu": [{"image_psnr_db": 40.0}]},
            "encoder+synthesis": {"cpu": [{"image_psnr_db": 30.0}]},
        },
    )
    assert int8_trusted(both)[0] is False
    monkeypatch.setattr(ort_backend, "cpu_id", lambda: "another")  # the same record read on another machine
    assert int8_trusted(_record())[0] is False


def test_auto_precision_follows_the_trust_rule(toy, caplog):
    art = artifacts.load(toy[0])
    art.manifest = dataclasses.replace(art.manifest, int8=_record())
    assert choose_precision(art, "auto") == "int8"
    art.manifest = dataclasses.replace(art.manifest, int8=_record(measured_on={"cpu": "Intel Xeon", "cpu_id": "x"}))
    with caplog.at_level(logging.INFO, logger="restyle_rt"):
        assert choose_precision(art, "auto") == "fp32"
    assert "precision auto -> fp32 (INT8 accuracy was measured on Intel Xeon" in caplog.text
    assert choose_precision(art, "int8") == "int8"  # asked by name: the user's call


def test_machine_record_names_this_cpu():
    rec = hostinfo.machine_record()
    assert rec["cpu"] and len(rec["cpu_id"]) == 32 and rec["cpu_id"] == hostinfo.cpu_id()
