"""Build settings the TensorRT backend depends on, read back from TensorRT and recorded with each real engine.

The session's engines (``built``, tests/trt/conftest.py) are reused; the refusal tests only parse and configure
(no engine build). A TensorRT-RTX plan cannot be deserialized without a GPU driver, so the settings come from the
network / config / profile objects the plan is built from (restyle_rt/engine/settings.py).
"""

from __future__ import annotations

import json
import shutil

import pytest

from restyle_rt import artifacts
from restyle_rt.engine import builder as B
from restyle_rt.engine.settings import problems
from restyle_rt.errors import BuildError

pytestmark = pytest.mark.trt

CASES = [(g, p) for p in ("fp32", "fp16") for g in ("encoder", "synthesis")]
IO = {
    "encoder": {"image": "input", "feedback": "input", "latent": "input", "latent_next": "output"},
    "synthesis": {"latent": "input", "image": "output", "feedback": "output"},
}


@pytest.mark.parametrize("graph,precision", CASES)
def test_record_holds_the_settings_the_backend_needs(built, trt_info, graph, precision):
    rec = built[(graph, precision)]
    has_flag = hasattr(trt_info.module.BuilderFlag, "REQUIRE_USER_ALLOCATION")
    assert rec["require_user_allocation"] is has_flag
    assert ("REQUIRE_USER_ALLOCATION" in rec["builder_flags"]) is has_flag
    if trt_info.is_rtx:  # RTX contexts are stream-capturable only with the flag; the backend captures the loop
        assert has_flag and rec["runtime_config"]["stream_capture"] is True
        assert rec["runtime_config"]["dynamic_shapes_kernel_specialization"] == "eager"
    assert rec["runtime_config"]["execution_context_allocation"] == "user_managed"
    assert rec["strongly_typed"] is trt_info.strongly_typed
    assert rec["tf32"] is (precision != "fp32") and ("TF32" in rec["builder_flags"]) is rec["tf32"]
    assert rec["optimization_profiles"] == 1
    assert {n: t["mode"] for n, t in rec["io"].items()} == IO[graph]
    assert {t["dtype"] for t in rec["io"].values()} == {"float32"}  # FP16 lives inside, I/O stays FP32
    for name, t in rec["io"].items():
        assert t["shape"][0] == -1 and -1 not in t["shape"][1:], (name, t)  # dynamic batch only
        if t["mode"] == "input":
            assert [d[0] for d in t["profile"]] == rec["profile"]  # min/opt/max from --batch
            assert all(d[1:] == t["shape"][1:] for d in t["profile"])


@pytest.mark.parametrize("graph", ["encoder", "synthesis"])
def test_layer_dtypes_show_the_precision_path(built, trt_info, graph):
    """FP32 engines: no FP16 layer. Strongly typed FP16 engines: FP16 layers, and FP32 ones kept (latent
    accumulation; demodulation / normalisation in synthesis)."""
    fp32, fp16 = built[(graph, "fp32")]["layer_dtypes"], built[(graph, "fp16")]["layer_dtypes"]
    assert fp32.get("float32", 0) > 0 and "float16" not in fp32
    if trt_info.strongly_typed:
        assert fp16["float16"] > fp16["float32"] > 0, fp16


def _configure(art_dir, info, precision="fp32", graph="synthesis", **opts):
    art = artifacts.load(art_dir)
    builder = B.EngineBuilder(info, B.BuildOptions(precision, art.profile, 1.0, **opts))
    ccs = builder.target_ccs(None) if info.compute_capability_api else ["8.7"]
    onnx_path, keep = B._onnx_for(art, graph, precision, builder.strongly_typed)
    return builder.configure(onnx_path, art.spec, graph, ccs, keep)


def test_configure_reads_settings_from_tensorrt(art_dir, trt_info):
    network, _parser, config, settings = _configure(art_dir, trt_info)
    flag = getattr(trt_info.module.BuilderFlag, "REQUIRE_USER_ALLOCATION", None)
    assert settings["require_user_allocation"] is (flag is not None and config.get_flag(flag))
    assert sorted(settings["io"]) == sorted(
        [network.get_input(0).name] + [network.get_output(i).name for i in range(network.num_outputs)]
    )


def test_missing_user_allocation_flag_is_refused(art_dir, trt_info, monkeypatch):
    """If the builder stops setting REQUIRE_USER_ALLOCATION, the build is refused before compiling."""
    trt = trt_info.module
    if not hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION"):
        pytest.skip(f"{trt_info.flavour} {trt_info.version} has no REQUIRE_USER_ALLOCATION")
    real = B.EngineBuilder._config

    def without_flag(self, *a, **k):
        config, profile = real(self, *a, **k)
        config.clear_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)
        return config, profile

    monkeypatch.setattr(B.EngineBuilder, "_config", without_flag)
    with pytest.raises(BuildError, match="REQUIRE_USER_ALLOCATION is not set.*stream-capturable"):
        _configure(art_dir, trt_info)


def test_tf32_on_an_fp32_engine_is_refused(art_dir, trt_info, monkeypatch):
    trt = trt_info.module
    real = B.EngineBuilder._config

    def with_tf32(self, *a, **k):
        config, profile = real(self, *a, **k)
        config.set_flag(trt.BuilderFlag.TF32)
        return config, profile

    monkeypatch.setattr(B.EngineBuilder, "_config", with_tf32)
    with pytest.raises(BuildError, match="TF32 is set on an fp32 engine"):
        _configure(art_dir, trt_info)


def _settings(**io_changes):
    io = {
        "latent": {
            "mode": "input",
            "dtype": "float32",
            "shape": [-1, 8, 512],
            "profile": [[1, 8, 512], [2, 8, 512], [4, 8, 512]],
        },
        "image": {"mode": "output", "dtype": "float32", "shape": [-1, 3, 32, 32]},
    }
    for name, change in io_changes.items():
        io[name] = {**io[name], **change}
    return {
        "builder_flags": ["REQUIRE_USER_ALLOCATION"],
        "require_user_allocation": True,
        "strongly_typed": True,
        "tf32": False,
        "optimization_profiles": 1,
        "io": io,
        "compute_capabilities": ["8.6"],
    }


EXPECTED = {"latent": ("input", [-1, 8, 512]), "image": ("output", [-1, 3, 32, 32])}


def _problems(settings, **kw):
    args = {
        "strongly_typed": True,
        "user_allocation": True,
        "precision": "fp32",
        "batch": [1, 2, 4],
        "expected_io": EXPECTED,
        "ccs": ["8.6"],
    }
    return problems(settings, **{**args, **kw})


def test_problems_accepts_what_the_backend_needs():
    assert _problems(_settings()) == []


@pytest.mark.parametrize(
    "change,words",
    [
        ({"image": {"dtype": "float16"}}, "I/O must stay float32"),
        ({"latent": {"shape": [4, 8, 512], "profile": [[4, 8, 512]] * 3}}, "dynamic batch dimension only"),
        ({"latent": {"profile": [[1, 8, 512], [1, 8, 512], [1, 8, 512]]}}, "does not span batch min/opt/max"),
        ({"latent": {"profile": [[1, 8, 512], [2, 8, 512], [4, 9, 512]]}}, "changes a static dimension"),
    ],
)
def test_problems_names_each_io_defect(change, words):
    why = _problems(_settings(**change))
    assert len(why) >= 1 and any(words in w for w in why), why


def test_problems_checks_flags_typing_and_targets():
    s = _settings()
    assert any("strongly typed = True" in w for w in _problems(s, strongly_typed=False))
    assert any("FP16 + OBEY_PRECISION_CONSTRAINTS" in w for w in _problems(s, strongly_typed=False, precision="fp16"))
    assert any("asked for ['8.9']" in w for w in _problems(s, ccs=["8.9"]))
    assert any("differs from the spec" in w for w in _problems(s, expected_io={"latent": EXPECTED["latent"]}))
    assert any("2 optimization profiles" in w for w in _problems({**s, "optimization_profiles": 2}))


def test_record_without_settings_is_rebuilt(built, art_dir, trt_info, tmp_path):
    """A record written before the settings were recorded (no ``require_user_allocation``) is not kept."""
    dst = tmp_path / "art"
    shutil.copytree(
        art_dir,
        dst,
        ignore=lambda d, names: [n for n in names if n.endswith(".engine") and n != "synthesis.fp32.engine"],
    )
    manifest = json.loads((dst / artifacts.MANIFEST).read_text())
    old = next(r for r in manifest["engines"] if (r["graph"], r["precision"]) == ("synthesis", "fp32"))
    for key in ("require_user_allocation", "builder_flags", "io", "layer_dtypes", "runtime_config"):
        old.pop(key)
    artifacts.write_manifest(dst, manifest)
    (rec,) = [r.to_dict() for r in B.build_engines(dst, precision="fp32", workspace_gb=1.0, graphs=["synthesis"])]
    assert rec.get("require_user_allocation") is hasattr(trt_info.module.BuilderFlag, "REQUIRE_USER_ALLOCATION")
    assert "io" in rec and "runtime_config" in rec


def test_user_allocation_flag_reaches_the_plan(built, art_dir, trt_info):
    """The only plan-level evidence without a GPU driver (a plan cannot be deserialized here): the same build
    without REQUIRE_USER_ALLOCATION serializes to a different plan size (measured: 136 bytes larger, RTX 1.7.1)."""
    trt = trt_info.module
    if not hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION"):
        pytest.skip(f"{trt_info.flavour} {trt_info.version} has no REQUIRE_USER_ALLOCATION")
    art = artifacts.load(art_dir)
    rec = built[("synthesis", "fp32")]
    builder = B.EngineBuilder(trt_info, B.BuildOptions("fp32", art.profile, rec["workspace_gb"]))
    network, _parser = builder._network(art.graph_path("synthesis"))
    config, _profile = builder._config(network, art.spec, "synthesis", rec["compute_capabilities"], set())
    config.clear_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)
    plan = builder.builder.build_serialized_network(network, config)
    assert plan is not None and plan.nbytes != rec["size_bytes"], (plan.nbytes, rec["size_bytes"])
