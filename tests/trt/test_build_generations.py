"""The builder's branches for standard TensorRT generations (8.5 JetPack 5, 10.3 JetPack 6, 10.13, 11.1), run
against views of the real TensorRT-RTX module with each generation's differences (tests/trt/_gen_fakes_build.py).

Real ONNX parsing and real network / config objects; only the build itself is not run (see the fakes' docstring).
The real TensorRT-RTX module is the fifth generation and is covered by test_build_settings.py on real engines.
"""

from __future__ import annotations

import pytest

pytest.importorskip("tensorrt_rtx_bindings", reason="the fake generations are derived from TensorRT-RTX")

import _gen_fakes_build as G

from restyle_rt import artifacts
from restyle_rt.engine import builder as B
from restyle_rt.engine.records import fp16_onnx_file
from restyle_rt.errors import BuildError
from restyle_rt.runtime.trt_compat import TrtInfo

pytestmark = pytest.mark.trt

#                 strongly typed, precision flags, explicit batch, timing cache, runtime config, user-managed memory
FEATURES = {
    "8.5": (False, True, True, True, False, False),
    "10.3": (False, True, False, True, False, True),
    "10.13": (True, True, False, True, True, True),
    "11.1": (True, False, False, True, True, True),
}


def _info(gen):
    return TrtInfo("tensorrt", G.GENERATIONS[gen].version, G.make_module(gen))


@pytest.mark.parametrize("gen", sorted(G.GENERATIONS))
def test_generation_table_matches_the_real_module(gen):
    """Hidden names exist in the real RTX module, added ones do not: the fakes stay derived from the real API."""
    hidden, added = G.differences(gen)

    def present(dotted):
        obj = G.real
        for part in dotted.split("."):
            members = getattr(obj, "__members__", {})
            if part not in members and not hasattr(obj, part):
                return False
            obj = members.get(part) or getattr(obj, part)
        return True

    assert all(present(n) for n in hidden), [n for n in hidden if not present(n)]
    assert not any(present(n) for n in added), [n for n in added if present(n)]


@pytest.mark.parametrize("gen", sorted(G.GENERATIONS))
def test_feature_flags_per_generation(gen):
    info = _info(gen)
    got = (
        info.strongly_typed,
        info.precision_flags,
        info.explicit_batch_flag,
        info.timing_cache,
        info.runtime_config,
        info.user_managed_memory,
    )
    assert got == FEATURES[gen]
    assert not info.compute_capability_api and not info.engine_validity and not info.is_rtx


def _configure(art_dir, gen, precision, **opts):
    info = _info(gen)
    art = artifacts.load(art_dir)
    builder = B.EngineBuilder(info, B.BuildOptions(precision, art.profile, 1.0, **opts))
    assert builder.needs_device() and not builder.user_allocation
    ccs = builder.target_ccs((8, 7))  # standard TensorRT builds for the local GPU (e.g. Jetson Orin)
    assert ccs == ["8.7"]
    if precision == "fp16" and builder.strongly_typed:  # same choice as RTX's: reuse the session's derived graph
        onnx_path, keep = art.root / fp16_onnx_file("synthesis"), set()
        assert onnx_path.is_file()
    else:
        onnx_path, keep = B._onnx_for(art, "synthesis", precision, builder.strongly_typed)
    return (builder, keep, *builder.configure(onnx_path, art.spec, "synthesis", ccs, keep))


@pytest.mark.parametrize("gen", sorted(G.GENERATIONS))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_configure_per_generation(built, art_dir, gen, precision):
    builder, keep, network, _parser, _config, settings = _configure(art_dir, gen, precision)
    strongly_typed, _precision_flags, explicit_batch = FEATURES[gen][:3]
    assert network.flags == ({"STRONGLY_TYPED"} if strongly_typed else set()) | (
        {"EXPLICIT_BATCH"} if explicit_batch else set()
    )
    assert settings["strongly_typed"] is strongly_typed and not settings["require_user_allocation"]
    assert "compute_capabilities" not in settings  # no AOT API: the record takes the local GPU's
    assert settings["runtime_config"] == {"execution_context_allocation": "user_managed", "stream_capture": True}
    assert settings["tf32"] is (precision == "fp16")
    flags = set(settings["builder_flags"])
    weak_fp16 = precision == "fp16" and not strongly_typed
    assert ({"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= flags) is weak_fp16
    assert {t["dtype"] for t in settings["io"].values()} == {"float32"}
    pinned = [layer for layer in network.layers.values() if layer.pinned]
    if not weak_fp16:
        assert not pinned
        return
    covered = set()
    for layer in pinned:  # pinned by its name or an output's name, all to FP32
        names = {layer.name} | {layer.get_output(k).name for k in range(layer.num_outputs)}
        assert names & keep and set(layer.pinned.values()) == {G.real.float32}, layer.name
        covered |= names
    nodes = _keep_nodes(builder, art_dir)
    uncovered = [n.name for n in nodes if n.name not in covered and not set(n.output) & covered]
    assert nodes and not uncovered, uncovered  # every keep-in-FP32 ONNX node reaches an FP32-pinned layer


def _keep_nodes(builder, art_dir):
    import onnx

    from restyle_rt.export import fp16

    model = onnx.load(str(artifacts.load(art_dir).graph_path("synthesis")), load_external_data=False)
    fp16._name_nodes(model.graph)
    keep = fp16.keep_fp32_nodes(model)
    return [n for n in model.graph.node if n.name in keep]


def test_standard_tensorrt_needs_the_local_gpu():
    builder = B.EngineBuilder(_info("10.3"), B.BuildOptions())
    with pytest.raises(BuildError, match="builds for the GPU it runs on.*no CUDA device"):
        builder.target_ccs(None)


@pytest.mark.filterwarnings("ignore:.*Timing cache operations are no-ops:DeprecationWarning")
def test_timing_cache_is_attached_on_standard_tensorrt_only(art_dir, trt_info, tmp_path):
    path = tmp_path / "timing.cache"
    builder, _keep, _net, _parser, config, _settings = _configure(art_dir, "10.13", "fp32", timing_cache=path)
    assert builder._timing_cache(config) is not None and config.get_timing_cache() is not None
    if trt_info.is_rtx:  # no effect in TensorRT-RTX: not even created
        rtx = B.EngineBuilder(trt_info, B.BuildOptions(timing_cache=path))
        assert rtx._timing_cache(rtx.builder.create_builder_config()) is None


def test_fake_network_bits_are_checked():
    """A creation bit a generation does not define is refused, so a flag taken from the wrong enum shows."""
    mod = G.make_module("11.1")
    builder = mod.Builder(G.real.Logger())
    with pytest.raises(ValueError, match="not flags of TensorRT 11.1"):
        builder.create_network(1 << 0)  # EXPLICIT_BATCH's bit: gone in 11.x
