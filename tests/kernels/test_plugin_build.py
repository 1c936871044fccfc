"""CMake build of the TensorRT plugin: a clear failure without TensorRT headers, a real build with them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from restyle_rt.kernels import build

CMAKE = shutil.which("cmake")
pytestmark = pytest.mark.skipif(CMAKE is None, reason="cmake not installed")


def tensorrt_include_dir():
    """The directory holding NvInfer.h ($TENSORRT_ROOT/include or the distro paths), else None."""
    roots = [os.path.join(os.environ["TENSORRT_ROOT"], "include")] if os.environ.get("TENSORRT_ROOT") else []
    roots += ["/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include"]
    return next((r for r in roots if os.path.isfile(os.path.join(r, "NvInfer.h"))), None)


def _configure(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = (
        {k: v for k, v in os.environ.items() if k != "TENSORRT_ROOT"}
        if "-DTENSORRT_ROOT=" in " ".join(args)
        else dict(os.environ)
    )
    return subprocess.run(
        [
            CMAKE,
            "-S",
            str(build.SOURCE_DIR),
            "-B",
            str(tmp_path / "b"),
            "-DCMAKE_CUDA_ARCHITECTURES=80",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.skipif(tensorrt_include_dir() is not None, reason="TensorRT headers are installed here")
def test_plugin_configure_fails_clearly_without_tensorrt(nvcc, tmp_path):
    proc = _configure(
        tmp_path, f"-DTENSORRT_ROOT={tmp_path / 'no-tensorrt'}", f"-DCMAKE_CUDA_COMPILER={nvcc}"
    )
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "NvInfer.h" in log and "TENSORRT_ROOT" in log and "RESTYLE_BUILD_PLUGIN=OFF" in log


def test_plugin_build(nvcc, tmp_path):
    inc = tensorrt_include_dir()
    if inc is None:
        pytest.skip(
            "TensorRT headers (NvInfer.h) not found: set TENSORRT_ROOT to build the ModulatedConv2d plugin"
        )
    proc = _configure(
        tmp_path,
        f"-DTENSORRT_ROOT={os.environ.get('TENSORRT_ROOT', str(Path(inc).parent))}",
        f"-DCMAKE_CUDA_COMPILER={nvcc}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(
        [CMAKE, "--build", str(tmp_path / "b"), "-j2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    so = tmp_path / "b" / build.PLUGIN_LIBRARY_NAME
    assert so.is_file()
    assert build.plugin_library_path([so.parent]) == so
    syms = subprocess.run(
        ["nm", "-D", "--defined-only", str(so)], check=False, capture_output=True, text=True
    ).stdout
    assert "modconv_forward" in syms


def test_kernel_only_cmake_build(nvcc, tmp_path):
    proc = _configure(tmp_path, "-DRESTYLE_BUILD_PLUGIN=OFF", f"-DCMAKE_CUDA_COMPILER={nvcc}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(
        [CMAKE, "--build", str(tmp_path / "b"), "-j2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lib = build.load_library(tmp_path / "b" / "libmodconv_kernels.so")
    assert lib.modconv_abi_version() == build.ABI_VERSION
