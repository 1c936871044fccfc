"""trt_compat: flavour selection and feature flags (no engine is built here)."""

from __future__ import annotations

import pytest

from restyle_rt.errors import BackendUnavailable
from restyle_rt.runtime import trt_compat

pytestmark = pytest.mark.unit


def test_unknown_flavour_is_a_typed_error(monkeypatch):
    trt_compat.load_trt.cache_clear()
    monkeypatch.setenv(trt_compat.ENV, "tensorflow")
    with pytest.raises(BackendUnavailable, match="unknown TensorRT flavour"):
        trt_compat.load_trt()
    trt_compat.load_trt.cache_clear()


def test_version_tuple():
    assert trt_compat._version_tuple("10.12.0.36") == (10, 12, 0)
    assert trt_compat._version_tuple("8.5.2.2") == (8, 5, 2)
    assert trt_compat._version_tuple("11.0.0b1") == (11, 0, 0)


def test_features_of_the_installed_flavour():
    info = trt_compat.try_load_trt()
    if info is None:
        pytest.skip("no TensorRT flavour importable")
    f = info.features()
    if info.is_rtx:  # TensorRT-RTX: strongly typed only, AOT targets, no timing cache, no FP16 flag
        assert f["strongly_typed"] and f["compute_capability_api"] and not f["timing_cache"]
        assert not f["precision_flags"]
    assert f["user_managed_memory"]


def test_strong_typing_rule_by_version():
    class Flags:
        STRONGLY_TYPED = 0
        EXPLICIT_BATCH = 1

    class Mod:
        NetworkDefinitionCreationFlag = Flags

        class BuilderFlag:
            FP16 = 0

    def info(v):
        return trt_compat.TrtInfo("tensorrt", v, Mod)

    assert not info("10.11.0").strongly_typed and info("10.11.0").precision_flags
    assert info("10.12.0").strongly_typed and info("11.1.0").strongly_typed
    assert info("8.5.2").explicit_batch_flag and not info("10.3.0").explicit_batch_flag
