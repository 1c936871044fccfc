"""Whether GPU tests run, skip or fail: skip only when there is truly nothing to run on.

* no NVIDIA driver installed, or the driver reports no device: skip (with the reason);
* a driver that cannot serve this cuda-python (``cudaErrorInsufficientDriver``: cuda-python 13 on a pre-580
  driver), or cuda-python missing while a driver is installed: **fail**, naming the fix; a skip here would hide a
  broken install on exactly the machines the GPU tests exist for.
"""

from __future__ import annotations

import os

import pytest

NVRTC_FIX = "pip install 'cuda-toolkit[nvrtc]==13.*' (NVRTC is not part of cuda-python 13; match the CUDA major)"


def driver_installed() -> bool:
    """An NVIDIA kernel driver is loaded (Linux ``/proc/driver/nvidia``, or ``NVIDIA_VISIBLE_DEVICES`` set)."""
    return os.path.exists("/proc/driver/nvidia/version") or bool(os.environ.get("NVIDIA_VISIBLE_DEVICES"))


def usable_device():
    """(major, minor) of device 0 after ``cudaSetDevice(0)``; pytest.skip / pytest.fail as described above."""
    from restyle_rt.errors import BackendUnavailable
    from restyle_rt.runtime import cuda

    try:
        cuda.cudart()
    except BackendUnavailable as e:
        if driver_installed():
            pytest.fail(f"an NVIDIA driver is installed but {e}")
        pytest.skip(f"no CUDA driver and no cuda-python: {e}")
    try:
        n = cuda.device_count()
    except cuda.CudaDriverError as e:
        pytest.fail(f"a CUDA driver is installed but unusable: {e}")
    if n == 0:
        pytest.skip("no CUDA device visible to cuda-python (no driver installed, or it reports no device)")
    cuda.set_device(0)
    return cuda.compute_capability(0)


def nvrtc_or_skip():
    """cuda-python's NVRTC module, usable; pytest.skip naming the install when its library is absent."""
    from cuda.bindings import nvrtc

    try:
        nvrtc.nvrtcVersion()
    except (RuntimeError, OSError) as e:  # cuda.pathfinder's DynamicLibNotFoundError is a RuntimeError
        pytest.skip(f"NVRTC library not found ({e}); {NVRTC_FIX}")
    return nvrtc
