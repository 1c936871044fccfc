"""Shared pytest fixtures. Markers are declared in pyproject.toml ([tool.pytest.ini_options])."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

# A runner that starts pytest in the background of a non-interactive shell (`cmd &`, nohup) leaves SIGINT ignored,
# and Python then installs no KeyboardInterrupt handler: the tests of interrupt handling need Python's default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # make tests/toy_artifacts.py importable from every test module
    sys.path.insert(0, str(TESTS))

# backend "auto" takes the static order (trt, ort, openvino) in tests, so that a test using the default backend
# runs the same backend on every machine; tests/unit/test_auto_backend.py exercises the measured choice itself.
os.environ.setdefault("RESTYLE_RT_AUTO_PROBE", "0")

# the runtime's caches (OpenVINO blobs, verified hashes, auto-backend decisions, kernels) go to a per-session folder,
# never the user's ~/.cache/restyle-rt; child processes inherit it; removed when the session ends
_RUNTIME_CACHE = tempfile.mkdtemp(prefix="restyle-rt-test-cache-")
os.environ["RESTYLE_RT_CACHE"] = _RUNTIME_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_RUNTIME_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """(artifacts dir, NumpyToy restatement) of the default toy model, profile [1, 1, 8]; once per session."""
    import toy_artifacts

    return toy_artifacts.build(tmp_path_factory.mktemp("toy") / "art")


@pytest.fixture
def make_toy(tmp_path):
    """Factory: ``make_toy(name, **build_kwargs) -> (dir, ref)`` for variant toy artifacts dirs."""
    import toy_artifacts

    def make(name="art", **kw):
        return toy_artifacts.build(tmp_path / name, **kw)

    return make


@pytest.fixture
def rgb_images(tmp_path):
    """Factory: ``rgb_images(n, folder="imgs", size=(40, 56), ext=".png") -> [paths]``, seeded random."""
    import numpy as np
    from PIL import Image

    def make(n, folder="imgs", size=(40, 56), ext=".png", seed=0):
        rng = np.random.default_rng(seed)
        d = tmp_path / folder
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            a = (a * rng.uniform(0.2, 1.0)).astype(np.uint8)  # vary brightness so images differ when pooled
            p = d / f"img{i:03d}{ext}"
            Image.fromarray(a).save(p)
            paths.append(p)
        return paths

    return make
