"""Build and load the modulated-conv kernel library (``libmodconv_kernels.so``) with nvcc.

Nothing compiles at import. ``build_library()`` compiles ``modulated_conv/modconv.cu`` into a cache directory
keyed by a hash of the sources, the architectures, the flags and the nvcc version (StyleGAN2-ADA
``custom_ops`` style), and ``load_library()`` opens it with ctypes and declares the C ABI of ``modconv.h``.
The TensorRT plugin .so is built with CMake (it needs TensorRT headers); ``plugin_library_path()`` finds a
built one for the runtime.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import BuildError

log = logging.getLogger("restyle_rt")

SOURCE_DIR = Path(__file__).resolve().parent / "modulated_conv"
KERNEL_SOURCES = ("modconv.cu",)
KERNEL_HEADERS = ("modconv.h", "modconv_kernels.cuh")
LIBRARY_NAME = "libmodconv_kernels.so"
PLUGIN_LIBRARY_NAME = "librestyle_modconv_plugin.so"
DEFAULT_ARCHS = ("80", "90")
NVCC_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-lineinfo")
ABI_VERSION = 1


def cache_dir() -> Path:
    """``kernels`` under :func:`restyle_rt.fsio.cache_root`."""
    from ..fsio import cache_root

    return cache_root() / "kernels"


def find_nvcc() -> str | None:
    """Path of nvcc: ``$CUDA_HOME/bin/nvcc``, then PATH, then /usr/local/cuda/bin/nvcc; None if absent."""
    cands = []
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            cands.append(os.path.join(os.environ[env], "bin", "nvcc"))
    cands += [shutil.which("nvcc") or "", "/usr/local/cuda/bin/nvcc"]
    return next((c for c in cands if c and os.access(c, os.X_OK)), None)


def nvcc_version(nvcc: str) -> str:
    """The last line of ``nvcc --version`` (e.g. 'Build cuda_13.0.r13.0/compiler.36424714_0')."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return out.splitlines()[-1] if out else "unknown"


def gencode_flags(archs: Sequence[str]) -> list:
    """SASS for each arch plus PTX of the newest, so newer GPUs can JIT."""
    archs = sorted({str(a).replace("sm_", "").replace(".", "") for a in archs}, key=int)
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return flags


def _default_archs() -> Sequence[str]:
    env = os.environ.get("RESTYLE_RT_CUDA_ARCHS")
    if env:
        return [a for a in env.replace(",", ";").split(";") if a]
    from . import runner  # device query only; never allocates

    cc = runner.device_compute_capability()
    return [f"{cc[0]}{cc[1]}"] if cc else list(DEFAULT_ARCHS)


def source_hash(archs: Sequence[str], extra: Sequence[str] = (), nvcc: str = "") -> str:
    """sha256 over sources, headers, archs, flags and the nvcc version (first 16 hex digits)."""
    h = hashlib.sha256()
    for name in KERNEL_SOURCES + KERNEL_HEADERS:
        h.update(name.encode())
        h.update((SOURCE_DIR / name).read_bytes())
    h.update(repr((sorted(archs), NVCC_FLAGS, tuple(extra), nvcc_version(nvcc) if nvcc else "")).encode())
    return h.hexdigest()[:16]


def run_nvcc(args: Sequence[str], nvcc: str | None = None, timeout: float = 600.0) -> str:
    """Run nvcc with ``args``; returns its combined output; BuildError (with that output) on failure."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found: install the CUDA toolkit or set CUDA_HOME")
    cmd = [nvcc, *args]
    log.info("nvcc: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"nvcc timed out after {timeout:.0f}s: {' '.join(cmd)}") from e
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        raise BuildError(f"nvcc failed (exit {proc.returncode}): {' '.join(cmd)}\n{output.strip()}")
    return output


def build_library(archs: Sequence[str] | None = None, force: bool = False, extra_flags: Sequence[str] = ()) -> Path:
    """Compile ``libmodconv_kernels.so`` into the cache (no-op when the hashed build exists).

    Args:
        archs (Sequence[str] | None): SM numbers like ("80", "90"). Default: $RESTYLE_RT_CUDA_ARCHS, else
            the current device's compute capability, else DEFAULT_ARCHS.
        force (bool): rebuild even if cached.
        extra_flags (Sequence[str]): appended to the nvcc command (part of the cache key).

    Returns:
        Path: the shared library.

    Raises:
        BuildError: nvcc missing or compilation failed (message carries the compiler output).
    """
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found: install the CUDA toolkit or set CUDA_HOME")
    archs = list(archs) if archs else list(_default_archs())
    out_dir = cache_dir() / source_hash(archs, extra_flags, nvcc)
    lib = out_dir / LIBRARY_NAME
    if lib.exists() and not force:
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_lib = Path(tmp) / LIBRARY_NAME
        run_nvcc(
            [
                *NVCC_FLAGS,
                *gencode_flags(archs),
                *extra_flags,
                "-o",
                str(tmp_lib),
                str(SOURCE_DIR / "modconv.cu"),
            ],
            nvcc,
        )
        os.replace(tmp_lib, lib)  # atomic: concurrent builders never see a half-written library
    log.info("built %s", lib)
    return lib


_LIB = None


def load_library(path: os.PathLike | None = None, archs: Sequence[str] | None = None) -> ctypes.CDLL:
    """Open the kernel library (building it if needed) and declare its C ABI. Cached per process.

    Args:
        path (PathLike | None): an existing library; default: ``build_library(archs)``.

    Raises:
        BuildError: build failed, the library cannot be opened, or its ABI version differs.
    """
    global _LIB
    default = path is None
    if default and _LIB is not None:
        return _LIB
    path = Path(path) if path else build_library(archs)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise BuildError(f"cannot load {path}: {e}") from e
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.modconv_abi_version.restype = ctypes.c_int
    lib.modconv_check.argtypes = [ctypes.c_void_p]
    lib.modconv_check.restype = ctypes.c_int
    lib.modconv_workspace_size.argtypes = [ctypes.c_void_p]
    lib.modconv_workspace_size.restype = sz
    lib.modconv_forward.argtypes = [vp, ctypes.c_int, vp, vp, vp, vp, vp, vp, vp, sz, vp]
    lib.modconv_forward.restype = ctypes.c_int
    lib.modconv_last_error.restype = ctypes.c_char_p
    if lib.modconv_abi_version() != ABI_VERSION:
        raise BuildError(f"{path}: ABI version {lib.modconv_abi_version()} != expected {ABI_VERSION}; rebuild it")
    if default:
        _LIB = lib
    return lib


class ModconvParams(ctypes.Structure):
    """ctypes mirror of ``modconv_params_t`` (modconv.h); field order is the ABI."""

    _fields_ = [
        (name, ctypes.c_int32)
        for name in (
            "batch",
            "in_channels",
            "out_channels",
            "height",
            "width",
            "kernel_size",
            "demodulate",
            "upsample",
            "activate",
            "noise_numel",
        )
    ]


def plugin_library_path(search: Sequence[os.PathLike] = ()) -> Path | None:
    """Path of a built ``librestyle_modconv_plugin.so`` for the TensorRT runtime to load, or None.

    Looks in ``search``, then ``$RESTYLE_RT_PLUGIN`` (a file or directory), then the CMake build dir
    ``build/modconv`` of the current directory, then the cache. TensorRT >= 10 / TensorRT-RTX builds register only
    through ``IPluginRegistry.load_library(path)`` (they export ``getCreators``); TensorRT 8.5/8.6 builds only at
    ``dlopen`` (``ctypes.CDLL``, Polygraphy ``--plugins``); see modulated_conv/CONTRACT.md. Building it needs
    TensorRT headers (CMakeLists.txt).
    """
    cands = [Path(p) for p in search]
    env = os.environ.get("RESTYLE_RT_PLUGIN")
    if env:
        cands.append(Path(env))
    cands += [Path.cwd() / "build" / "modconv", cache_dir() / "plugin"]
    for c in cands:
        f = c / PLUGIN_LIBRARY_NAME if c.is_dir() else c
        if f.is_file():
            return f
    return None
