"""The manifest names the tools that made the graphs, onnxslim (which rewrites them) included."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest

pytestmark = pytest.mark.unit


def test_tool_versions_name_onnxslim(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from restyle_rt.export import onnx as exp

    v = exp.tool_versions()
    assert {"restyle_rt", "torch", "onnx", "onnxslim", "onnxruntime", "numpy", "python"} <= set(v)
    try:
        want = importlib.metadata.version("onnxslim")
    except importlib.metadata.PackageNotFoundError:
        want = None
    assert v["onnxslim"] == want
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # not installed: the graphs were not slimmed, and it says so
    assert exp.tool_versions()["onnxslim"] is None


@pytest.mark.parity  # shares the parity tests' cached export
def test_exported_manifest_records_onnxslim():
    pytest.importorskip("torch")
    slim = pytest.importorskip("onnxslim")
    from model_fixtures import artifacts_path

    man = json.loads((artifacts_path("psp-irse50-ffhq") / "manifest.json").read_text())
    assert man["versions"]["onnxslim"] == slim.__version__
    assert man["versions"]["onnx"] and man["versions"]["torch"]
