"""Manifests written by ``restyle-rt export`` read into the typed records and back to the same JSON, byte for byte:
the cached model fixtures (pSp, e4e, FPN, cars, the fitted fixture) and one fresh export with the plugin variant."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
from model_fixtures import EXPORTED, artifacts_path, checkpoint_path, fitted_artifacts_path  # noqa: E402

from restyle_rt import artifacts  # noqa: E402
from restyle_rt.manifest import GraphEntry, Source  # noqa: E402

pytestmark = pytest.mark.parity


def _round_trips(d) -> dict:
    stored = (d / artifacts.MANIFEST).read_text()
    m = artifacts.load(d).manifest
    assert json.dumps(m.to_dict(), indent=2) + "\n" == stored  # what write_manifest writes: the same bytes
    return json.loads(stored)


@pytest.mark.parametrize("name", EXPORTED)
def test_exported_fixture_manifest_round_trips(name):
    stored = _round_trips(artifacts_path(name))
    m = artifacts.read_manifest(artifacts_path(name))
    assert isinstance(m.source, Source) and m.source.sha256 == stored["source"]["sha256"]
    assert m.graphs["encoder"].data_sha256 == stored["graphs"]["encoder"]["data_sha256"]
    assert m.seeds["avg_feedback"].sha256 == stored["seeds"]["avg_feedback"]["sha256"]


def test_fitted_fixture_manifest_round_trips():
    stored = _round_trips(fitted_artifacts_path())
    assert artifacts.read_manifest(fitted_artifacts_path()).source.fit == stored["source"]["fit"]


def test_fresh_export_with_plugin_variant_round_trips(tmp_path):
    from restyle_rt.export import export_artifacts

    out = export_artifacts(
        checkpoint_path("psp-resnet34-church"), tmp_path / "art", max_batch=2, progress=False, plugin_variant=True
    )
    stored = _round_trips(out)
    m = artifacts.read_manifest(out)
    assert m.source.fit is None and "fit" in stored["source"]  # a stored null stays a null
    variant = GraphEntry.from_dict(m.variants["synthesis.plugin"])
    assert (out / variant.file).is_file() and variant.extra["custom_op"] == "ModulatedConv2d"
