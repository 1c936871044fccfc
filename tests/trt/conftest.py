"""Fixtures of the engine tests: one TensorRT flavour, one fixture artifacts dir, engines built once per session.

The fixture is the exporter's random-weight pSp IR-SE50 FFHQ model (``tests/model_fixtures.py``, shared cache);
when the exporter is not importable (no torch) a tiny toy export stands in. Engine builds log lines such as
``built encoder fp16 engine: N bytes in S s``; they are repeated in the terminal summary so CI logs show them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _logs import BUILD_LINES, info_logs


def pytest_terminal_summary(terminalreporter):
    if BUILD_LINES:
        terminalreporter.section("restyle-rt engine builds / FP16 proxy parity")
        for line in BUILD_LINES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def trt_info():
    from restyle_rt.runtime.trt_compat import try_load_trt

    info = try_load_trt()
    if info is None:
        pytest.skip("no TensorRT flavour importable (install restyle-rt[trt-rtx] for CPU-only AOT builds)")
    return info


def _copy_artifacts(src: Path, dst: Path) -> Path:
    """Private copy so that engines and manifest edits never touch the shared cache.

    Real copies, not hard links: ``onnx.load`` refuses external data files with several links ("potential
    hardlink attack").
    """
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            shutil.copy2(p, dst / p.name)
    return dst


@pytest.fixture(scope="session")
def fixture_src():
    """(source artifacts dir, kind): the exported random-weight model, or the toy export."""
    try:
        import model_fixtures

        pytest.importorskip("torch")
        from restyle_rt.export import export_artifacts  # noqa: F401

        return model_fixtures.artifacts_path(model_fixtures.EXPORTED[0]), "export"
    except (ImportError, AttributeError, pytest.skip.Exception):
        return None, "toy"


@pytest.fixture(scope="session")
def art_dir(fixture_src, tmp_path_factory):
    src, kind = fixture_src
    dst = tmp_path_factory.mktemp("trt") / "art"
    if kind == "toy":
        pytest.importorskip("torch")
        from _toy import make_toy_artifacts

        return make_toy_artifacts(dst)
    return _copy_artifacts(Path(src), dst)


@pytest.fixture(scope="session")
def built(trt_info, art_dir):
    """{(graph, precision): record (its JSON)} after building fp32 and fp16 engines once."""
    from restyle_rt.engine import build_engines

    out = {}
    with info_logs():
        for precision in ("fp32", "fp16"):
            for rec in build_engines(art_dir, precision=precision, workspace_gb=1.0):
                out[(rec.graph, precision)] = rec.to_dict()
    return out
