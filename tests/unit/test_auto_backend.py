"""Backend ``auto`` on the CPU (restyle_rt/runtime/backends/choose.py): the measured choice, its cache, failures,
the accuracy bar and the log line. Timings are injected through ``choose.measure`` (no sleeps); the candidates are
ONNX Runtime backends under other names, plus the real OpenVINO backend where it is installed."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from restyle_rt import artifacts
from restyle_rt.errors import ArtifactError, BackendUnavailable, InputError
from restyle_rt.runtime.api import Inverter
from restyle_rt.runtime.backends import choose, get_backend
from restyle_rt.runtime.backends.ort import OrtBackend

STARTED: list = []
ALIVE = {"now": 0, "peak": 0}


class FakeA(OrtBackend):
    name = "a"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        STARTED.append(self.name)
        self._alive = True
        ALIVE["now"] += 1
        ALIVE["peak"] = max(ALIVE["peak"], ALIVE["now"])

    def close(self):
        if getattr(self, "_alive", False):
            self._alive = False
            ALIVE["now"] -= 1
        super().close()


class FakeB(FakeA):
    name = "b"


class FakeGpu(FakeA):
    name = "gpu"


class Broken(FakeA):
    name = "broken"

    def __init__(self, art, **kw):
        raise ArtifactError("broken: cannot load these graphs")


@pytest.fixture
def auto(monkeypatch, tmp_path):
    """Measured mode with a fresh cache; candidates ``a``, ``b`` (``gpu`` unavailable). Returns the probe log:
    ``times`` (name -> injected seconds) and ``calls`` (names measured, in order)."""
    monkeypatch.setenv("RESTYLE_RT_AUTO_PROBE", "1")
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESTYLE_RT_AUTO_BATCH", raising=False)
    classes = {"gpu": FakeGpu, "a": FakeA, "b": FakeB, "broken": Broken}
    usable = {"gpu": False, "a": True, "b": True, "broken": True}
    monkeypatch.setattr(choose, "AUTO_ORDER", ("gpu", "a", "b"))
    monkeypatch.setattr(choose, "MEASURED", ("a", "b", "broken"))
    monkeypatch.setattr(choose, "available", lambda n: (usable[n], "" if usable[n] else f"{n}: no device"))
    monkeypatch.setattr(choose, "backend_class", classes.__getitem__)
    probe = {"times": {"a": 0.5, "b": 0.25}, "calls": [], "usable": usable}

    def measure(be, batch):
        probe["calls"].append((be.name, batch))
        t = probe["times"][be.name]
        if isinstance(t, Exception):
            raise t
        return t

    monkeypatch.setattr(choose, "measure", measure)
    choose._logged_choices.clear()
    STARTED.clear()
    ALIVE.update(now=0, peak=0)
    return probe


def _choices(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend auto -> ")]


def test_choice_follows_the_measured_times(toy, auto, caplog):
    art = artifacts.load(toy[0])
    with caplog.at_level(logging.INFO, logger="restyle_rt"):
        with get_backend("auto", art) as be:
            assert be.name == "b"
        auto["times"].update(a=0.1)
        with get_backend("auto", art, threads=1) as be:  # another key: measured again
            assert be.name == "a"
    assert [c[0] for c in auto["calls"]] == ["a", "b", "a", "b"]
    first, second = _choices(caplog)
    assert "backend auto -> b fp32 (measured now: b fp32 0.25 s, a fp32 0.5 s per step at batch 1" in first
    assert "a fp32 0.1 s, b fp32 0.25 s" in second
    assert "skipped gpu: gpu: no device" in first


def test_decision_is_cached_and_only_the_winner_starts(toy, auto, caplog):
    art = artifacts.load(toy[0])
    get_backend("auto", art).close()
    files = list(choose.cache_dir().glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["choice"] == "b" and rec["times_s"] == {"a fp32": 0.5, "b fp32": 0.25} and rec["batch"] == 1
    auto["times"].update(a=0.1)  # would change the answer if it were measured again
    STARTED.clear()
    with caplog.at_level(logging.INFO, logger="restyle_rt"), get_backend("auto", art) as be:
        assert be.name == "b"
    assert len(auto["calls"]) == 2 and STARTED == ["b"]
    assert f"cached decision {files[0]}" in _choices(caplog)[0]


def test_refresh_measures_again_and_static_order_does_not_measure(toy, auto, monkeypatch, tmp_path):
    art = artifacts.load(toy[0])
    get_backend("auto", art).close()
    auto["times"].update(a=0.1)
    monkeypatch.setenv("RESTYLE_RT_AUTO_PROBE", "refresh")
    assert get_backend("auto", art).name == "a" and len(auto["calls"]) == 4
    monkeypatch.setenv("RESTYLE_RT_AUTO_PROBE", "0")
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "fresh"))
    auto["times"].update(a=9.0)  # a measurement would pick b
    assert get_backend("auto", art).name == "a" and len(auto["calls"]) == 4  # static order, no probe
    assert not choose.cache_dir().exists()
    monkeypatch.setenv("RESTYLE_RT_AUTO_PROBE", "yes")
    with pytest.raises(InputError, match=r"RESTYLE_RT_AUTO_PROBE='yes'; expected 1 .*0 .*refresh"):
        get_backend("auto", art)


@pytest.mark.parametrize("part", ["cpu", "threads", "graphs", "weights", "versions", "batch", "options"])
def test_each_key_part_invalidates_the_cache(toy, make_toy, auto, monkeypatch, part):
    art, opts = artifacts.load(toy[0]), {}
    get_backend("auto", art).close()
    get_backend("auto", art).close()
    assert len(auto["calls"]) == 2  # second start: cached
    if part == "cpu":
        monkeypatch.setattr(choose, "cpu_id", lambda: "another-cpu")
    elif part == "threads":
        opts = {"threads": 1}
    elif part == "graphs":
        art = artifacts.load(make_toy("other", seed=1)[0])
    elif part == "weights":  # external weights: the manifest's data_sha256 (toy graphs keep their weights inline)
        m = art.manifest
        syn = dataclasses.replace(m.graphs["synthesis"], data_sha256="0" * 64)
        art.manifest = dataclasses.replace(m, graphs={**m.graphs, "synthesis": syn})
    elif part == "versions":
        monkeypatch.setattr(choose, "library_version", lambda n: "99.0")
    elif part == "batch":
        monkeypatch.setenv("RESTYLE_RT_AUTO_BATCH", "4")
    elif part == "options":
        opts = {"spinning": True}
    get_backend("auto", art, **opts).close()
    assert len(auto["calls"]) == 4, f"changing {part} did not measure again"
    get_backend("auto", art, **opts).close()
    assert len(auto["calls"]) == 4  # and the new decision is cached in turn
    if part == "batch":
        assert auto["calls"][-1] == ("b", 4)


def test_probe_batch_is_clamped_and_checked(toy, auto, monkeypatch):
    art = artifacts.load(toy[0])  # profile [1, 1, 8]
    monkeypatch.setenv("RESTYLE_RT_AUTO_BATCH", "64")
    assert choose.probe_batch(art) == 8
    monkeypatch.setenv("RESTYLE_RT_AUTO_BATCH", "0")
    with pytest.raises(InputError, match="RESTYLE_RT_AUTO_BATCH='0'; expected a positive integer"):
        choose.probe_batch(art)


def test_the_callers_batch_is_probed_unless_the_variable_overrides_it(toy, auto, monkeypatch):
    art = artifacts.load(toy[0])  # profile [1, 1, 8]
    assert choose.probe_batch(art) == 1
    assert choose.probe_batch(art, 3) == 3
    assert choose.probe_batch(art, 20) == 8
    with pytest.raises(InputError, match="batch 0; expected a positive integer"):
        choose.probe_batch(art, 0)
    with get_backend("auto", art, probe_batch=3) as be:  # the Inverter / `invert --batch` path
        assert be.name == "b"
    assert auto["calls"] == [("a", 3), ("b", 3)]
    monkeypatch.setenv("RESTYLE_RT_AUTO_BATCH", "2")
    assert choose.probe_batch(art, 3) == 2
    with Inverter.load(toy[0], backend="auto", probe_batch=5) as inv:
        assert inv.backend.name == "b"
    assert auto["calls"][2:] == [("a", 2), ("b", 2)]
    with get_backend("ort", art, probe_batch=3) as be:  # a named backend ignores the hint
        assert be.name == "ort"
    assert len(auto["calls"]) == 4


def test_failing_candidates_are_skipped_with_their_reason(toy, auto, monkeypatch, caplog):
    art = artifacts.load(toy[0])
    monkeypatch.setattr(choose, "AUTO_ORDER", ("gpu", "broken", "b", "a"))  # broken fails to start, b to run
    auto["times"].update(b=RuntimeError("b crashed"))
    with caplog.at_level(logging.INFO, logger="restyle_rt"), get_backend("auto", art) as be:
        assert be.name == "a"
    msg = _choices(caplog)[0]
    assert "broken: broken: cannot load these graphs" in msg
    assert "b: failed during the probe (RuntimeError: b crashed)" in msg
    assert "measured now: a fp32 0.5 s per step" in msg
    monkeypatch.setenv("RESTYLE_RT_AUTO_PROBE", "refresh")
    auto["times"].update(a=RuntimeError("a crashed"))
    with pytest.raises(BackendUnavailable, match=r"no backend can run here: .*a: failed during the probe"):
        get_backend("auto", art)


def test_every_candidate_failing_to_start_raises_their_error_type(toy, auto, monkeypatch):
    monkeypatch.setattr(choose, "backend_class", lambda n: Broken)
    with pytest.raises(ArtifactError, match=r"no backend can run here: gpu: .*a: broken: .*b: broken: "):
        get_backend("auto", artifacts.load(toy[0]))


def test_a_usable_gpu_backend_is_taken_without_probing(toy, auto):
    auto["usable"]["gpu"] = True
    with get_backend("auto", artifacts.load(toy[0])) as be:
        assert be.name == "gpu"
    assert auto["calls"] == []


@pytest.mark.parametrize("path, precision", [("amx_bf16", "fp32"), ("avx512_bf16", "mixed")])
def test_a_precision_missing_the_bar_is_never_chosen(toy, auto, monkeypatch, caplog, tmp_path, path, precision):
    """OpenVINO BF16 would be fastest, and the CPU "has" BF16; BF16 misses the ship bar on every BF16 path recorded
    (parity.SHIP_VERDICTS) and ``mixed`` meets it on AVX-512 BF16 only, so auto runs OpenVINO FP32 on an AMX CPU
    and ``mixed`` on an AVX-512 BF16 one (openvino's precision rule decides before anything is timed)."""
    ov = pytest.importorskip("restyle_rt.runtime.backends.openvino")
    if not ov.OpenVinoBackend.available()[0]:
        pytest.skip("openvino is not usable here")
    if precision != "fp32" and not ov.cpu_has_bf16():
        pytest.skip("this CPU cannot run BF16")
    from restyle_rt.runtime import hostinfo
    from restyle_rt.runtime.backends import available, backend_class

    monkeypatch.setattr(ov, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(hostinfo, "bf16_path", lambda: path)
    monkeypatch.setattr(choose, "available", available)
    monkeypatch.setattr(choose, "backend_class", backend_class)
    monkeypatch.setattr(choose, "AUTO_ORDER", ("ort", "openvino"))
    monkeypatch.setattr(choose, "MEASURED", ("ort", "openvino"))
    auto["times"].update(ort=0.5, openvino=0.01)
    with caplog.at_level(logging.INFO, logger="restyle_rt"):
        with get_backend("auto", artifacts.load(toy[0]), cache_dir=tmp_path / "ov") as be:
            assert (be.name, be.precision) == ("openvino", precision)
    assert (
        f"backend auto -> openvino {precision} (measured now: openvino {precision} 0.01 s, ort fp32 0.5 s"
        in _choices(caplog)[0]
    )


def test_real_probe_on_toy_artifacts_times_each_candidate(toy, monkeypatch, tmp_path):
    """No injection: the probe runs the toy graphs through ORT and OpenVINO and records positive times."""
    ov = pytest.importorskip("restyle_rt.runtime.backends.openvino")
    if not ov.OpenVinoBackend.available()[0]:
        pytest.skip("openvino is not usable here")
    monkeypatch.setenv("RESTYLE_RT_AUTO_PROBE", "1")
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path))
    with get_backend("auto", artifacts.load(toy[0])) as be:
        rec = json.loads(next(choose.cache_dir().glob("*.json")).read_text())
        assert rec["choice"] == be.name
    from restyle_rt.runtime.backends.openvino import resolve_precision

    ov_precision = resolve_precision("auto")  # this CPU's: mixed where its ship bar was measured, else fp32
    assert set(rec["times_s"]) == {"ort fp32", f"openvino {ov_precision}"}
    assert all(t > 0 for t in rec["times_s"].values())
    assert min(rec["times_s"], key=rec["times_s"].get).startswith(rec["choice"])


@pytest.mark.parametrize("load, warned", [(99.0, True), (0.1, False), (None, False)])
def test_a_probe_on_a_busy_machine_says_so(toy, auto, monkeypatch, caplog, load, warned):
    monkeypatch.setattr(choose, "_load_average", lambda: load)
    with caplog.at_level(logging.INFO, logger="restyle_rt"):
        get_backend("auto", artifacts.load(toy[0]), threads=2).close()
    busy = [r for r in caplog.records if r.levelno == logging.WARNING and "machine was busy" in r.getMessage()]
    assert bool(busy) == warned
    if warned:
        assert (
            "load average 99.0 > 2 threads" in busy[0].getMessage()
            and "RESTYLE_RT_AUTO_PROBE=refresh" in busy[0].getMessage()
        )
    assert json.loads(next(choose.cache_dir().glob("*.json")).read_text())["load_avg_1m"] == load


@pytest.mark.parametrize("fastest, started", [("b", ["a", "b"]), ("a", ["a", "b", "a"])])
def test_one_candidate_alive_at_a_time(toy, auto, fastest, started):
    """Peak memory of the probe is one backend's; the winner is started again only when it did not run last."""
    auto["times"].update({fastest: 0.01})
    with get_backend("auto", artifacts.load(toy[0])) as be:
        assert be.name == fastest
        assert ALIVE["peak"] == 1 and ALIVE["now"] == 1 and STARTED == started
