"""GPU tests: skipped cleanly when cuda-python sees no CUDA device."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def device():
    from restyle_rt.runtime import cuda

    if cuda.device_count() == 0:
        pytest.skip("no CUDA device visible to cuda-python")
    cuda.set_device(0)
    return cuda.compute_capability(0)
