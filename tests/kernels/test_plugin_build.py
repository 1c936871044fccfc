"""The TensorRT plugin: which class and entry points each TensorRT flavour compiles, and the CMake build.

Flavours: TensorRT 8.5/8.6 (IPluginV2DynamicExt, static registration), 10.x and 11.x (IPluginV3, getCreators +
setLoggerFinder for IPluginRegistry::loadLibrary) and TensorRT-RTX (like 10.x; its headers set NV_TENSORRT_MAJOR to
1 and define TRT_MAJOR_RTX). The flavour choice is checked everywhere (it needs only version macros). Compiling both
plugin files per flavour needs real TensorRT headers, which are not in the repository nor in CI: point
``RESTYLE_RT_TRT_INCLUDE_DIRS`` at include directories (os.pathsep-separated) for that local check.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from restyle_rt.kernels import build

CMAKE = shutil.which("cmake")
needs_cmake = pytest.mark.skipif(CMAKE is None, reason="cmake not installed")
CXX = shutil.which("g++")

# NvInferVersion.h as each flavour spells it: 8.5 (plain numbers), 10.x/11.x (TRT_*_ENTERPRISE aliases), RTX (TRT_*_RTX
# aliases; NV_TENSORRT_MAJOR is the RTX major).
VERSION_HEADERS = {
    "8.5": "#define NV_TENSORRT_MAJOR 8\n#define NV_TENSORRT_MINOR 5\n",
    "10.16": "#define TRT_MAJOR_ENTERPRISE 10\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n",
    "11.1": "#define TRT_MAJOR_ENTERPRISE 11\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n",
    "rtx-1.7": "#define TRT_MAJOR_RTX 1\n#define TRT_MINOR_RTX 7\n#define NV_TENSORRT_MAJOR TRT_MAJOR_RTX\n",
}
EXPECT_V3 = {"8.5": False, "10.16": True, "11.1": True, "rtx-1.7": True}


@pytest.mark.skipif(CXX is None, reason="g++ not installed")
@pytest.mark.parametrize("flavour", list(VERSION_HEADERS))
def test_plugin_flavour_choice(flavour, tmp_path):
    """Defect 8: RTX headers (NV_TENSORRT_MAJOR 1) selected the V2 plugin and no getCreators."""
    (tmp_path / "NvInferVersion.h").write_text(VERSION_HEADERS[flavour])
    probe = tmp_path / "probe.cpp"
    probe.write_text(
        '#include "modconvPluginFlavour.h"\n'
        "int v3 = RESTYLE_MODCONV_PLUGIN_V3; int rtx = RESTYLE_MODCONV_TENSORRT_RTX;\n"
    )
    proc = subprocess.run(
        [CXX, "-E", "-P", f"-I{tmp_path}", f"-I{build.SOURCE_DIR}", str(probe)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"int v3 = {int(EXPECT_V3[flavour])};" in proc.stdout, proc.stdout
    assert f"int rtx = {int(flavour.startswith('rtx'))};" in proc.stdout, proc.stdout


def header_sets():
    """(name, include dir) of the TensorRT header sets named by RESTYLE_RT_TRT_INCLUDE_DIRS (local check only)."""
    dirs = [d for d in os.environ.get("RESTYLE_RT_TRT_INCLUDE_DIRS", "").split(os.pathsep) if d]
    return [(Path(d).parent.name or d, d) for d in dirs if os.path.isfile(os.path.join(d, "NvInferVersion.h"))]


def expects_v3(include_dir) -> bool:
    """From the header set's own NvInferVersion.h: RTX (TRT_MAJOR_RTX) or NV_TENSORRT_MAJOR >= 10."""
    text = Path(include_dir, "NvInferVersion.h").read_text()
    defines = dict(re.findall(r"^#define\s+(\w+)\s+(\w+)", text, flags=re.MULTILINE))
    major = defines.get("NV_TENSORRT_MAJOR", "0")
    major = defines.get(major, major)
    return "TRT_MAJOR_RTX" in defines or int(major) >= 10


def cuda_include_dir():
    nvcc = build.find_nvcc()
    cands = [Path(os.path.realpath(nvcc)).parent.parent / "include"] if nvcc else []
    cands += [Path("/usr/local/cuda/include")] + sorted(Path("/usr/local").glob("cuda-*/include"))
    return next((str(c) for c in cands if (c / "cuda_runtime_api.h").is_file()), None)


def _symbols(so: Path) -> tuple:
    dyn = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True, check=True).stdout
    every = subprocess.run(["nm", "-C", str(so)], capture_output=True, text=True, check=True).stdout
    return dyn, every


@pytest.mark.skipif(CXX is None, reason="g++ not installed")
def test_plugin_sources_per_flavour(tmp_path):
    """Defects 8 and 9 on real headers: each flavour compiles one plugin class and one registration mechanism.

    Compiles modconvPluginV2.cpp + modconvPluginV3.cpp (no kernels, nothing linked) into a shared object per header
    set and reads its symbols: V3 builds define getCreators and setLoggerFinder and no static registrar; V2 builds
    the static registrar and no loadLibrary entry points.
    """
    sets, cuda_inc = header_sets(), cuda_include_dir()
    if not sets:
        pytest.skip(
            "no TensorRT headers: set RESTYLE_RT_TRT_INCLUDE_DIRS to include dirs holding NvInferVersion.h "
            "(local check; headers are not in the repository or in CI)"
        )
    if cuda_inc is None:
        pytest.skip("CUDA headers (cuda_runtime_api.h) not found")
    seen = {}
    for name, inc in sets:
        so = tmp_path / f"plugin-{name}.so"
        srcs = [str(build.SOURCE_DIR / f) for f in ("modconvPluginV2.cpp", "modconvPluginV3.cpp")]
        proc = subprocess.run(
            [
                CXX,
                "-std=c++17",
                "-shared",
                "-fPIC",
                "-Wno-deprecated-declarations",
                f"-I{inc}",
                f"-I{cuda_inc}",
                f"-I{build.SOURCE_DIR}",
                *srcs,
                "-o",
                str(so),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        dyn, every = _symbols(so)
        v3 = "vtable for restyle_rt::ModconvPluginV3" in every
        v2 = "vtable for restyle_rt::ModconvPluginV2" in every
        entry = {s for s in ("getCreators", "setLoggerFinder", "getPluginCreators") if f" T {s}" in dyn}
        static = "pluginRegistrar" in every
        seen[name] = (v3, v2, sorted(entry), static)
        assert v3 != v2 and v3 == expects_v3(inc), (name, seen[name])
        if v3:
            assert entry == {"getCreators", "setLoggerFinder"} and not static, (name, seen[name])
        else:
            assert not entry and static, (name, seen[name])
    print(seen)


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


@needs_cmake
@pytest.mark.skipif(tensorrt_include_dir() is not None, reason="TensorRT headers are installed here")
def test_plugin_configure_fails_clearly_without_tensorrt(nvcc, tmp_path):
    proc = _configure(tmp_path, f"-DTENSORRT_ROOT={tmp_path / 'no-tensorrt'}", f"-DCMAKE_CUDA_COMPILER={nvcc}")
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "NvInfer.h" in log and "TENSORRT_ROOT" in log and "RESTYLE_BUILD_PLUGIN=OFF" in log


@needs_cmake
def test_plugin_build(nvcc, tmp_path):
    inc = tensorrt_include_dir()
    if inc is None:
        pytest.skip("TensorRT headers (NvInfer.h) not found: set TENSORRT_ROOT to build the ModulatedConv2d plugin")
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
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], check=False, capture_output=True, text=True).stdout
    assert "modconv_forward" in syms


@needs_cmake
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
