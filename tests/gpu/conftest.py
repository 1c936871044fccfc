"""GPU tests: skipped when there is no CUDA driver or device; FAILED when one is present but unusable."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def device():
    from _device import usable_device

    return usable_device()
