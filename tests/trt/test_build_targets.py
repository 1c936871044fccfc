"""Build targets: TensorRT-RTX's compute-capability list, ``--compute-capability current`` on GPUs it lacks, and
no device query where none is needed (RTX builds ahead of time on a machine without a GPU driver)."""

from __future__ import annotations

import pytest

from restyle_rt.engine import builder as B
from restyle_rt.errors import BuildError

pytestmark = pytest.mark.trt


@pytest.fixture
def rtx(trt_info):
    if not trt_info.compute_capability_api:
        pytest.skip(f"{trt_info.flavour} builds for the local GPU only")
    return trt_info


def _builder(info, ccs):
    return B.EngineBuilder(info, B.BuildOptions(compute_capabilities=ccs))


def test_supported_targets_come_from_the_module(rtx):
    names = [n for n in rtx.module.ComputeCapability.__members__ if n.startswith("SM")]
    got = B.supported_compute_capabilities(rtx)
    assert len(got) == len(names) and all("SM" + c.replace(".", "") in names for c in got)
    assert set(B.default_compute_capabilities(rtx)) == set(got) - set(B.RTX_EXCLUDED_CC)


@pytest.mark.parametrize("cc", [(9, 0), (8, 7)])  # H100/H200 (Hopper), Jetson Orin: not in RTX's enum
def test_current_on_a_gpu_rtx_lacks_is_a_clear_error(rtx, cc):
    with pytest.raises(BuildError) as e:
        _builder(rtx, ["current"]).target_ccs(cc)
    msg = str(e.value)
    want = f"{cc[0]}.{cc[1]}"
    assert f"this GPU's compute capability {want}" in msg
    assert all(c in msg for c in B.supported_compute_capabilities(rtx))  # what RTX can target
    assert "standard TensorRT" in msg and "--flavour tensorrt" in msg


def test_current_on_a_supported_gpu(rtx):
    cc = B.supported_compute_capabilities(rtx)[-1]
    assert _builder(rtx, ["current"]).target_ccs(tuple(int(x) for x in cc.split("."))) == [cc]


def test_explicit_unknown_target_is_a_clear_error(rtx):
    with pytest.raises(BuildError, match="cannot build for compute capability 9.0: it targets .*8.6"):
        _builder(rtx, ["8.6", "9.0"]).target_ccs(None)
    with pytest.raises(BuildError, match="expected MAJOR.MINOR"):
        _builder(rtx, ["hopper"]).target_ccs(None)


def test_rtx_aot_build_asks_for_no_device(rtx, built, art_dir, monkeypatch):
    """Default / explicit RTX targets never query CUDA (a driverless box may report an error, not 0 devices)."""

    def no_query():
        raise AssertionError("the CUDA device was queried")

    monkeypatch.setattr(B, "_device_cc", no_query)
    assert not _builder(rtx, None).needs_device() and not _builder(rtx, ["8.6"]).needs_device()
    assert _builder(rtx, ["current"]).needs_device()
    recs = B.build_engines(art_dir, precision="fp16", workspace_gb=1.0)  # current engines: kept, not rebuilt
    assert [r.built_at for r in recs] == [built[(r.graph, "fp16")]["built_at"] for r in recs]


def test_cli_current_on_hopper_is_one_line(rtx, built, art_dir, monkeypatch, capsys):
    from restyle_rt.cli import main
    from restyle_rt.errors import EXIT_BUILD

    monkeypatch.setattr(B, "_device_cc", lambda: (9, 0))
    assert main(["build", str(art_dir), "--compute-capability", "current"]) == EXIT_BUILD
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "restyle-rt build: error:" in err[0] and "9.0" in err[0], err
