"""The fakes' per-generation member tables against the real standard-TensorRT bindings of those releases.

``tests/fakes/trt_members.json`` records, from the string table of each ``tensorrt-cu12-bindings`` wheel's
``tensorrt.so`` (``tests/fakes/gen_trt_members.py``), which API names a release has. The runtime fakes
(``tests/fakes/tensorrt.py``) and the builder fakes (``tests/trt/_gen_fakes_build.py``) must agree with it for every
name the code branches on. TensorRT 8.5 is not on the package index: its rows stay inferred (see the fakes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorrt_rtx_bindings", reason="the fakes are derived from TensorRT-RTX")
pytest.importorskip("cuda.bindings.runtime")

import _gen_fakes_build as B  # noqa: E402
from fakes.gpu import FakeGpu  # noqa: E402
from fakes.tensorrt import make_trt  # noqa: E402

pytestmark = pytest.mark.unit
RECORD = json.loads((Path(__file__).parents[1] / "fakes" / "trt_members.json").read_text())
RUNTIME_FAKES = {"10.3": "10.3.0", "11.1": "11.1.0.106"}
BUILD_FAKES = {"10.3": "10.3.0", "10.13": "10.13.3.9", "11.1": "11.1.0.106"}
# names the runtime feature-detects (hasattr): a fake must have each exactly when the release does
RUNTIME_BRANCHES = (
    "create_execution_context_without_device_memory",
    "device_memory_size",
    "device_memory_size_v2",
    "get_device_memory_size_for_profile_v2",
    "set_device_memory",
    "create_runtime_config",
    "ExecutionContextAllocationStrategy",
    "IRuntimeConfig",
    "is_stream_capturable",
    "get_engine_validity",
    "CudaGraphStrategy",
    "DynamicShapesKernelSpecializationStrategy",
    "execute_async_v3",
    "set_input_shape",
    "set_tensor_address",
    "num_io_tensors",
)
BUILD_BRANCHES = (
    "STRONGLY_TYPED",
    "EXPLICIT_BATCH",
    "create_runtime_config",
    "ExecutionContextAllocationStrategy",
    "get_engine_validity",
    "set_compute_capability",
    "CudaGraphStrategy",
    "DynamicShapesKernelSpecializationStrategy",
)


def _real(version, name):
    state = RECORD["versions"][version]["members"][name]
    if state == "unknown":
        pytest.skip(f"{name}: merged into a longer string in {version}'s bindings; cannot tell")
    return state == "present"


def _has(mod, owner, name):
    if owner == "module":
        return hasattr(mod, name)
    if owner == "NetworkDefinitionCreationFlag":
        return name in getattr(mod.NetworkDefinitionCreationFlag, "__members__", {})
    cls = getattr(mod, owner, None)
    return cls is not None and hasattr(cls, name)


@pytest.mark.parametrize("name", RUNTIME_BRANCHES)
@pytest.mark.parametrize("gen", sorted(RUNTIME_FAKES))
def test_runtime_fake_matches_the_release(gen, name):
    mod = make_trt(gen, FakeGpu())
    assert _has(mod, RECORD["owners"][name], name) == _real(RUNTIME_FAKES[gen], name), (gen, name)


@pytest.mark.parametrize("name", BUILD_BRANCHES)
@pytest.mark.parametrize("gen", sorted(BUILD_FAKES))
def test_build_fake_matches_the_release(gen, name):
    mod = B.make_module(gen)
    assert _has(mod, RECORD["owners"][name], name) == _real(BUILD_FAKES[gen], name), (gen, name)


def test_record_has_teeth():
    """The record separates the generations where it matters (so a wrong fake table cannot pass by accident)."""
    m = {v: r["members"] for v, r in RECORD["versions"].items()}
    assert m["10.3.0"]["create_execution_context_without_device_memory"] == "present"
    assert m["11.1.0.106"]["create_execution_context_without_device_memory"] == "absent"
    assert m["10.3.0"]["create_runtime_config"] == "absent" and m["10.11.0.33"]["create_runtime_config"] == "present"
    assert m["10.0.1"]["set_device_memory"] == "absent" and m["10.3.0"]["set_device_memory"] == "present"
    assert m["11.1.0.106"]["EXPLICIT_BATCH"] == "absent" and m["10.13.3.9"]["EXPLICIT_BATCH"] == "present"
    assert all(r["members"]["is_stream_capturable"] == "absent" for r in RECORD["versions"].values())
