"""nvcc really compiles the kernels (sm_80 + sm_90, FP32 and FP16 paths); the cached build and the C ABI."""

import ctypes
import re

import pytest

from restyle_rt.errors import BuildError
from restyle_rt.kernels import build, runner

EXPECTED_KERNELS = [
    "modconv_tiledIfLi3ELb0ELi32E",
    "modconv_tiledIfLi3ELb1ELi16E",
    "modconv_tiledIfLi1ELb0ELi32E",
    "modconv_tiledI6__halfLi3ELb0ELi32E",
    "modconv_tiledI6__halfLi3ELb1ELi16E",
    "modconv_tiledI6__halfLi1ELb0ELi32E",
    "modconv_1x1_smallIfLi3E",
    "modconv_1x1_smallI6__halfLi3E",
    "demod_kernel",
]


def test_nvcc_compiles_fp32_and_fp16_kernels_for_sm80_sm90(nvcc, tmp_path):
    out = build.run_nvcc(
        [
            "-c",
            "-O3",
            "-std=c++17",
            "-Xcompiler",
            "-fPIC",
            "-Xptxas",
            "-v",
            *build.gencode_flags(["80", "90"]),
            str(build.SOURCE_DIR / "modconv.cu"),
            "-o",
            str(tmp_path / "modconv.o"),
        ],
        nvcc,
    )
    assert (tmp_path / "modconv.o").stat().st_size > 0
    compiled = re.findall(r"Compiling entry function '(\S+)' for '(sm_\d+)'", out)
    for arch in ("sm_80", "sm_90"):
        names = [n for n, a in compiled if a == arch]
        missing = [k for k in EXPECTED_KERNELS if not any(k in n for n in names)]
        assert not missing, f"{arch}: kernels not compiled: {missing}"
    assert "spill stores" in out and not re.search(r"\b[1-9]\d{2,} bytes spill stores", out), "heavy spilling"
    # static shared memory counts against the same 48 KiB as the dynamic one (the CPU emulator does not see it)
    smem = [int(b) for b in re.findall(r"(\d+) bytes smem", out)]
    assert smem and max(smem) <= 48 * 1024, smem


def test_build_library_is_cached_and_exposes_the_c_abi(nvcc, tmp_path, monkeypatch):
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path))
    lib_path = build.build_library(["80"])
    assert lib_path.parent.parent == tmp_path / "kernels"
    mtime = lib_path.stat().st_mtime_ns
    assert build.build_library(["80"]) == lib_path and lib_path.stat().st_mtime_ns == mtime  # cache hit
    assert build.build_library(["86"]) != lib_path  # arch is in the key

    lib = build.load_library(lib_path)  # loads without a GPU: cudart touches the driver only at first launch
    assert lib.modconv_abi_version() == build.ABI_VERSION
    p = runner.make_params((3, 8, 5, 5), (6, 8, 3, 3), 100, True, True, True)
    assert lib.modconv_check(ctypes.byref(p)) == 0
    assert lib.modconv_workspace_size(ctypes.byref(p)) == 3 * 6 * 4
    p.demodulate = 0
    assert lib.modconv_workspace_size(ctypes.byref(p)) == 0
    p.noise_numel = 25  # Hout*Wout is 100 when upsampling
    assert lib.modconv_check(ctypes.byref(p)) == 1 and b"noise_numel" in lib.modconv_last_error()
    p = runner.make_params((1, 8, 5, 5), (6, 8, 1, 1), 0, False, True, False)
    assert lib.modconv_check(ctypes.byref(p)) == 1 and b"upsample" in lib.modconv_last_error()


def test_build_error_carries_the_compiler_output(nvcc, tmp_path, monkeypatch):
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path))
    bad = tmp_path / "bad.cu"
    bad.write_text("__global__ void k() { this is not cuda; }\n")
    with pytest.raises(BuildError, match=r"nvcc failed \(exit \d+\)[\s\S]*error"):
        build.run_nvcc(["-c", str(bad), "-o", str(tmp_path / "bad.o")], nvcc)
    with pytest.raises(BuildError, match="nvcc failed"):
        build.build_library(["80"], extra_flags=["--no-such-nvcc-flag"])


def test_cache_dir_follows_restyle_rt_cache_else_the_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "c"))
    assert build.cache_dir() == tmp_path / "c" / "kernels"
    monkeypatch.delenv("RESTYLE_RT_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build.cache_dir() == tmp_path / ".cache" / "restyle-rt" / "kernels"  # beside the runtime's other caches


def test_runner_imports_cudart_of_older_cuda_python(monkeypatch):
    """cuda-python 11.8.3 and 12.0-12.5 have only ``cuda.cudart`` (no ``cuda.bindings``): the runner takes it."""
    import sys
    import types

    stub = types.ModuleType("cuda.cudart")
    pkg = types.ModuleType("cuda")
    pkg.cudart = stub
    monkeypatch.setitem(sys.modules, "cuda", pkg)
    monkeypatch.setitem(sys.modules, "cuda.cudart", stub)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)  # import of cuda.bindings fails
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    assert runner._cudart() is stub
