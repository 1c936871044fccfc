"""Fixtures of the kernel tests: the CUDA and nvcc skip conditions."""

import pytest


@pytest.fixture(scope="session")
def cuda_device():
    """Skips the test cleanly when no CUDA device is usable through cuda-python."""
    from restyle_rt.kernels import runner

    ok = runner.available()
    if not ok:
        pytest.skip(f"needs a CUDA device: {ok.reason}")
    return runner.device_compute_capability()


@pytest.fixture(scope="session")
def nvcc():
    """Path of nvcc; skips only when the CUDA toolkit is absent."""
    from restyle_rt.kernels import build

    path = build.find_nvcc()
    if path is None:
        pytest.skip("nvcc not found (CUDA toolkit absent)")
    return path
