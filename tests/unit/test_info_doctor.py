"""``restyle-rt info ARTIFACTS`` and ``restyle-rt doctor`` (text and ``--json``) on the toy artifacts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from restyle_rt import artifacts as A
from restyle_rt.cli import main
from restyle_rt.errors import EXIT_BACKEND, EXIT_OK, EXIT_USAGE
from restyle_rt.runtime import cuda, hostinfo, trt_compat
from restyle_rt.runtime.trt_compat import TrtInfo

pytestmark = pytest.mark.unit

RTX = TrtInfo("tensorrt-rtx", "1.7.1.116", None)


def _strict(text: str):
    """json.loads refusing Infinity / NaN (what a strict JSON reader does)."""

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def art(toy, tmp_path):
    """A toy artifacts copy with hashes, an export parity report, two engine records and an INT8 record."""
    d = tmp_path / "art"
    shutil.copytree(toy[0], d)
    m = json.loads((d / "manifest.json").read_text())
    for g in ("encoder", "synthesis"):
        m["graphs"][g]["sha256"] = A.sha256_file(d / m["graphs"][g]["file"])
    m["parity"] = {
        "encoder": {"ort": {"latent_next": {"rel_l2": 1.4e-6, "psnr_db": float("inf"), "max_abs": 2e-6}}},
        "synthesis": {"ort": {"image": {"rel_l2": 9.5e-7, "psnr_db": 125.0, "max_abs": 1e-6}}},
        "inputs": {"batch": 2, "seed": 1234},
    }
    (d / "engines").mkdir()
    (d / "engines" / "encoder.fp16.engine").write_bytes(b"e" * 100)
    base = {
        "precision": "fp16",
        "size_bytes": 100,
        "trt_flavour": "tensorrt-rtx",
        "compute_capabilities": ["8.6"],
        "profile": [1, 1, 8],
    }
    m["engines"] = [
        dict(base, graph="encoder", file="engines/encoder.fp16.engine", trt_version="1.7.1.116"),
        dict(base, graph="synthesis", file="engines/synthesis.fp16.engine", trt_version="1.7.1.116"),
    ]
    m["int8"] = {
        "method": "entropy (KL, 2048 bins)",
        "data": {"source": "images: cal", "count": 12, "held_out": 4, "loop_steps": 5},
        "graphs": {"encoder": {"cpu": {"file": "int8/encoder.cpu.onnx"}, "trt": {"file": "int8/e.onnx"}}},
        "kept_layers": {"encoder": ["/body/Conv_3", "/head/Gemm"], "synthesis": ["/conv1/Conv"]},
        "not_shipped": {"synthesis": "held-out accuracy misses the ship bar"},
        "meets_ship_bar": {"encoder": True},
        "accuracy": {
            "encoder": {
                "cpu": [
                    {"step": 1, "latent_rel_l2": 1e-3, "image_rel_l2": 2e-3, "image_psnr_db": 48.5},
                    {"step": 2, "latent_rel_l2": 2e-3, "image_rel_l2": 0.0, "image_psnr_db": None},
                ]
            }
        },
        "measured_on": hostinfo.machine_record(),
    }
    A.write_manifest(d, m)
    return d


@pytest.fixture
def rtx_here(monkeypatch):
    """TensorRT-RTX 1.7.1.116 importable, no CUDA device."""
    monkeypatch.setattr(trt_compat, "try_load_trt", lambda flavour="": RTX)
    monkeypatch.setattr(cuda, "device_count", lambda: 0)


def _info_json(capsys, *argv) -> dict:
    assert main(["info", *map(str, argv), "--json"]) == EXIT_OK
    return _strict(capsys.readouterr().out)


def test_info_json_on_plain_toy(toy, capsys):
    d = _info_json(capsys, toy[0])
    assert d["spec"]["n_styles"] == 4 and d["batch_profile"] == [1, 1, 8]
    assert set(d["graphs"]) == {"encoder", "synthesis"} and d["graphs"]["encoder"]["files"] == ["encoder.onnx"]
    assert d["graphs"]["encoder"]["bytes"] == (toy[0] / "encoder.onnx").stat().st_size
    assert d["engines"]["records"] == [] and d["int8"] is None and d["parity"] is None


def test_info_text_on_plain_toy(toy, capsys):
    assert main(["info", str(toy[0])]) == EXIT_OK
    out = capsys.readouterr().out
    assert "GradualStyleEncoder" in out and "profile 1/1/8" in out and "encoder.onnx" in out
    assert "engines    none" in out and "int8       none" in out and "parity     none" in out


def test_info_engines_checked_against_this_tensorrt(art, capsys, rtx_here):
    d = _info_json(capsys, art)
    assert d["engines"]["runtime"] == {"flavour": "tensorrt-rtx", "version": "1.7.1.116"}
    enc, syn = d["engines"]["records"]
    assert enc["status"] == "ok" and "compute capability not checked: no CUDA device" in enc["detail"]
    assert enc["bytes"] == 100 and enc["compute_capabilities"] == ["8.6"]
    assert syn["status"] == "refused" and "missing" in syn["detail"] and "restyle-rt build" in syn["detail"]


def test_info_engine_for_another_tensorrt_is_refused(art, capsys, monkeypatch):
    monkeypatch.setattr(trt_compat, "try_load_trt", lambda flavour="": TrtInfo("tensorrt-rtx", "1.8.0.1", None))
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "compute_capability", lambda i=0: (8, 9))
    d = _info_json(capsys, art)
    enc = d["engines"]["records"][0]
    assert d["engines"]["device_cc"] == "8.9" and enc["status"] == "refused"
    assert "1.7.1.116" in enc["detail"] and "1.8.0.1" in enc["detail"] and "8.9" in enc["detail"]


def test_info_without_tensorrt_cannot_check(art, capsys, monkeypatch):
    monkeypatch.setattr(trt_compat, "try_load_trt", lambda flavour="": None)
    d = _info_json(capsys, art)
    assert {r["status"] for r in d["engines"]["records"]} == {"unchecked"}
    assert {r["detail"] for r in d["engines"]["records"]} == {"cannot check: no TensorRT"}
    assert main(["info", str(art)]) == EXIT_OK
    assert "cannot check: no TensorRT" in capsys.readouterr().out


def test_info_int8_and_parity(art, capsys, rtx_here, monkeypatch):
    d = _info_json(capsys, art)
    q = d["int8"]
    assert q["method"].startswith("entropy") and q["graphs"] == {"encoder": ["cpu", "trt"]}
    assert q["kept_layers"] == {"encoder": ["/body/Conv_3", "/head/Gemm"], "synthesis": ["/conv1/Conv"]}
    assert [r["latent_rel_l2"] for r in q["accuracy"]["encoder"]["cpu"]] == [1e-3, 2e-3]
    assert q["measured_on"]["cpu"] == hostinfo.cpu_model() and q["measured_on_this_cpu"] is True
    assert d["parity"]["encoder"]["ort"]["latent_next"] == {"rel_l2": 1.4e-6, "psnr_db": None, "max_abs": 2e-6}
    assert d["parity"]["synthesis"]["ort"]["image"]["psnr_db"] == 125.0
    assert main(["info", str(art)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2 layer(s) kept in FP32: /body/Conv_3, /head/Gemm" in out and "not shipped: held-out" in out
    assert "1.00e-03/48.5 dB, 2.00e-03/identical" in out and "(this CPU)" in out
    assert "latent_next 1.40e-06" in out and "image 9.50e-07/125.0 dB" in out
    monkeypatch.setattr(hostinfo, "cpu_id", lambda: "another")
    assert _info_json(capsys, art)["int8"]["measured_on_this_cpu"] is False


def test_info_verify_finds_a_modified_graph(art, capsys, rtx_here):
    assert {g["verified"] for g in _info_json(capsys, art)["graphs"].values()} == {None}  # not hashed by default
    assert {g["verified"] for g in _info_json(capsys, art, "--verify")["graphs"].values()} == {True}
    with open(art / "synthesis.onnx", "ab") as f:
        f.write(b"\0")
    d = _info_json(capsys, art, "--verify")
    assert d["graphs"]["synthesis"]["verified"] is False and d["graphs"]["encoder"]["verified"] is True
    assert main(["info", str(art), "--verify"]) == EXIT_OK
    assert "SHA256 MISMATCH" in capsys.readouterr().out


def test_info_on_a_non_artifacts_dir(tmp_path, capfd):
    assert main(["info", str(tmp_path)]) == EXIT_USAGE
    assert "has no manifest.json" in capfd.readouterr().err


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == EXIT_OK
    d = _strict(capsys.readouterr().out)
    assert set(d["backends"]) >= {"ort", "trt", "openvino"} and d["backends"]["ort"]["available"] is True
    assert "CPUExecutionProvider" in d["onnxruntime_providers"]
    assert d["libraries"]["numpy"] == np.__version__ and d["cpu"]["model"] == hostinfo.cpu_model()
    assert set(d["cpu"]["flags"]) >= (
        {"avx512_vnni", "avx512_bf16", "amx_tile"} if d["cpu"]["arch"] == "x86" else {"asimddp", "bf16"}
    )
    assert all(f in d["cpu"]["flags"] and d["cpu"]["flags"][f] for f in d["cpu"]["int8_dot_product"])
    assert set(d["tensorrt"]) == {"tensorrt", "tensorrt-rtx"}
    assert {"cuda_python", "devices", "driver", "error"} <= set(d["cuda"])
    if not d["backends"]["trt"]["available"]:
        assert d["backends"]["trt"]["why"]


def test_doctor_text_and_exit_code_without_backends(capsys, monkeypatch):
    from restyle_rt.runtime import backends

    assert main(["doctor"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "ort       yes" in out and "cpu " in out and "libraries  numpy" in out
    monkeypatch.setattr(backends, "available", lambda name: (False, f"{name} is broken here"))
    assert main(["doctor"]) == EXIT_BACKEND
    assert "ort       no: ort is broken here" in capsys.readouterr().out


def test_doctor_reports_cuda_devices(capsys, monkeypatch):
    monkeypatch.setattr(cuda, "probe", lambda: cuda.DeviceStatus(2, 12080, 12060))
    monkeypatch.setattr(cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda, "compute_capability", lambda i=0: (9, 0) if i == 0 else (8, 6))
    assert main(["doctor", "--json"]) in (EXIT_OK, EXIT_BACKEND)
    c = _strict(capsys.readouterr().out)["cuda"]
    assert c["devices"] == [{"index": 0, "compute_capability": "9.0"}, {"index": 1, "compute_capability": "8.6"}]
    assert (c["driver"], c["runtime"], c["error"]) == ("12.8", "12.6", "")


def test_info_and_doctor_register_nothing_heavy():
    code = textwrap.dedent("""
        import json, sys
        sys.modules["torch"] = None
        from restyle_rt.cli import build_parser
        args = build_parser().parse_args(["info", "A", "--json"])
        args2 = build_parser().parse_args(["doctor"])
        heavy = [m for m in ("numpy", "onnxruntime", "openvino", "tensorrt_rtx", "tqdm") if sys.modules.get(m)]
        print(json.dumps({"heavy": heavy, "funcs": [args.func.__module__, args2.func.__module__]}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"heavy": [], "funcs": ["restyle_rt.cli.info", "restyle_rt.cli.doctor"]}
