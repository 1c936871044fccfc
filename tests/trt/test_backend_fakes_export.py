"""TrtBackend on the fakes with the exporter's graphs (random-weight pSp IR-SE50 FFHQ fixture), against the ORT loop.

The toy tests check the loop logic per step; this one runs the real export's graph I/O (names, style count, input
vs image size) through the backend's device buffers and compares with OrtBackend's host loop on the same files.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.runtime")
pytest.importorskip("tensorrt_rtx_bindings")

from fakes.backend import fake_backend_env  # noqa: E402

from restyle_rt import artifacts  # noqa: E402
from restyle_rt.runtime.backends import trt as trt_backend  # noqa: E402
from restyle_rt.runtime.backends.ort import OrtBackend  # noqa: E402

pytestmark = pytest.mark.trt


@pytest.fixture
def exported(fixture_src, tmp_path):
    """make_toy stand-in: a fresh dir linking to the exported artifacts (plans name the graphs by path)."""
    src, kind = fixture_src
    if kind != "export":
        pytest.skip("the exporter is not importable here")

    def make(profile=None):
        dst = tmp_path / "art"
        dst.mkdir()
        for p in src.iterdir():
            if p.is_file():
                os.symlink(p, dst / p.name)
        (dst / artifacts.MANIFEST).unlink()
        (dst / artifacts.MANIFEST).write_text((src / artifacts.MANIFEST).read_text())
        return dst, None

    return make


def test_exported_graphs_through_the_device_loop(monkeypatch, exported):
    """Batch 1, 2 steps, captured graph (warm-up + capture + replay): the IR-SE50 encoder dominates the cost."""
    e = fake_backend_env(monkeypatch, exported, generation="rtx", source=True)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *e.art.spec.input_hw)).astype(np.float32)
    with trt_backend.TrtBackend(e.art) as be:
        res = be.run_loop(x, 2)
        assert be.use_graphs and e.gpu.launches == 1
    with OrtBackend(e.art, threads=2) as ref_be:
        ref = ref_be.run_loop(x, 2)
    # same ONNX Runtime CPU kernels on both sides: only session-option rounding differs
    np.testing.assert_allclose(res.latents, ref.latents, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.images, ref.images, rtol=1e-4, atol=1e-4)
