"""Fixtures of the kernel tests: the CUDA and nvcc skip conditions."""

import pytest


@pytest.fixture(scope="session")
def cuda_device():
    """Skips cleanly when there is no CUDA driver or device; fails when one is present but unusable (an
    insufficient driver, a missing cuda-python), as the tests in tests/gpu do."""
    from gpu._device import usable_device

    usable_device()
    from restyle_rt.kernels import runner

    ok = runner.available()
    if not ok:
        pytest.fail(f"a CUDA device is present but the kernel runner cannot use it: {ok.reason}")
    return runner.device_compute_capability()


@pytest.fixture(scope="session")
def nvcc():
    """Path of nvcc; skips only when the CUDA toolkit is absent."""
    from restyle_rt.kernels import build

    path = build.find_nvcc()
    if path is None:
        pytest.skip("nvcc not found (CUDA toolkit absent)")
    return path
