"""Run the CUDA kernels of ``restyle_rt/kernels/modulated_conv/`` on the CPU, from the same source, under ASan+UBSan.

Test machinery (not shipped in the package): ``modconv.cu`` and ``modconv_kernels.cuh`` are compiled from the
package's source directory by the host C++ compiler (g++) with a small emulation of the CUDA subset they use (this
folder: ``cuda_emu.h``: block threads as fibers, ``__shared__``, dynamic shared memory with CUDA's 48 KiB default
limit, ``__syncthreads``, warp shuffles, ``cudaLaunchKernel``, ``_Float16`` for ``__half``). The host launch code
(grid, block, shared-memory sizes, path choice) is the one the nvcc build runs, so a wrong launch bound fails here as
it would on a GPU. The driver (``modconv_emu_main.cpp``) calls the C ABI of ``modconv.h`` like
``restyle_rt/kernels/runner.py`` does. Every run is a separate process built with
``-fsanitize=address,undefined -fno-sanitize-recover=all``: any sanitizer report fails it.

Slow (each GPU thread is a fiber) and meant for tests: keep spatial sizes small.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from restyle_rt.errors import BuildError
from restyle_rt.kernels.build import KERNEL_HEADERS, KERNEL_SOURCES, SOURCE_DIR, cache_dir

log = logging.getLogger("restyle_rt")

EMU_DIR = Path(__file__).resolve().parent
EMU_SOURCES = ("cuda_emu.h", "modconv_emu_main.cpp", "include/cuda_runtime.h", "include/cuda_fp16.h")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
CXX_FLAGS = ("-std=c++17", "-O2", "-g", "-Wall", "-Wno-unknown-pragmas", "-rdynamic", *SANITIZE)
# halt on the first report with a non-zero status; the fiber switches are annotated for ASan, so its
# makecontext/swapcontext warning is expected.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1:exitcode=86:detect_stack_use_after_return=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}


def find_cxx() -> str | None:
    """The C++ compiler: ``$CXX``, else g++ on PATH; None if absent."""
    for cand in (os.environ.get("CXX"), "g++"):
        path = shutil.which(cand) if cand else None
        if path:
            return path
    return None


def _hash(cxx: str) -> str:
    h = hashlib.sha256()
    for rel in (*KERNEL_SOURCES, *KERNEL_HEADERS):
        h.update(rel.encode())
        h.update((SOURCE_DIR / rel).read_bytes())
    for rel in EMU_SOURCES:
        h.update(f"emu/{rel}".encode())
        h.update((EMU_DIR / rel).read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    h.update(repr((CXX_FLAGS, version.splitlines()[:1])).encode())
    return h.hexdigest()[:16]


def build_emulator(force: bool = False, root: os.PathLike | None = None, timeout: float = 600.0) -> Path:
    """Compile the sanitized CPU-emulation driver into the cache (no-op when the hashed build exists).

    Args:
        force (bool): rebuild even if cached.
        root (PathLike | None): cache root; default ``build.cache_dir() / "emu"``.

    Raises:
        BuildError: no C++ compiler, or compilation failed (message carries the compiler output).
    """
    cxx = find_cxx()
    if cxx is None:
        raise BuildError("no C++ compiler: install g++ (or set CXX) to run the CUDA kernels on the CPU emulator")
    out_dir = Path(root or cache_dir() / "emu") / _hash(cxx)
    exe = out_dir / "modconv_emu"
    if exe.exists() and not force:
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        cmd = [
            cxx,
            *CXX_FLAGS,
            f"-I{EMU_DIR / 'include'}",
            f"-I{EMU_DIR}",
            f"-I{SOURCE_DIR}",
            "-include",
            str(EMU_DIR / "cuda_emu.h"),
            "-x",
            "c++",
            str(SOURCE_DIR / "modconv.cu"),
            "-x",
            "none",
            str(EMU_DIR / "modconv_emu_main.cpp"),
            "-o",
            str(Path(tmp) / exe.name),
        ]
        log.info("emulator build: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise BuildError(f"emulator build failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
        os.replace(Path(tmp) / exe.name, exe)
    return exe


def run(exe: os.PathLike, args: Sequence[str], trace: bool = False, timeout: float = 600.0) -> str:
    """Run the driver with the sanitizer settings; returns stdout.

    Raises:
        BuildError: non-zero exit (a sanitizer report, an emulator abort, or a library error), with its stderr.
    """
    env = {**os.environ, **SANITIZER_ENV}
    if trace:
        env["CUDA_EMU_TRACE"] = "1"
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BuildError(f"emulated kernels failed (exit {proc.returncode}):\n{proc.stderr.strip()[-6000:]}")
    return proc.stdout


def modulated_conv(
    x: np.ndarray,
    s: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    noise: np.ndarray | None,
    demodulate: bool = True,
    upsample: bool = False,
    activate: bool = True,
    exe: os.PathLike | None = None,
    trace: bool = False,
):
    """One fused layer on the CPU-emulated CUDA kernels (same arguments as ``runner.modulated_conv``).

    Returns:
        tuple: (out [B, Cout, Hout, Wout] in the dtype of x, the driver's stdout: one ``launch ...`` line per
        kernel launch when ``trace``).

    Raises:
        BuildError: build failure, a sanitizer report, or the library rejected the call.
    """
    if x.dtype not in (np.float32, np.float16):
        raise ValueError(f"x must be float32 or float16, got {x.dtype}")
    exe = exe or build_emulator()
    b, cin, h, w = x.shape
    cout, _, k, _ = weight.shape
    hout, wout = (2 * h, 2 * w) if upsample else (h, w)
    noise_numel = 0 if noise is None else int(np.asarray(noise).size)
    fields = [
        b,
        cin,
        cout,
        h,
        w,
        k,
        int(demodulate),
        int(upsample),
        int(activate),
        noise_numel,
        int(x.dtype == np.float16),
        int(bias is not None),
    ]

    def f32(a):
        return np.ascontiguousarray(a, dtype=np.float32)

    with tempfile.TemporaryDirectory() as d:
        Path(d, "case.txt").write_text(" ".join(map(str, fields)) + "\n")
        np.ascontiguousarray(x).tofile(Path(d, "x.bin"))
        f32(s).tofile(Path(d, "s.bin"))
        f32(weight).tofile(Path(d, "w.bin"))
        if bias is not None:
            f32(bias).tofile(Path(d, "b.bin"))
        if noise is not None:
            f32(noise).tofile(Path(d, "n.bin"))
        stdout = run(exe, [d], trace=trace)
        out = np.fromfile(Path(d, "out.bin"), dtype=x.dtype).reshape(b, cout, hout, wout)
    return out, stdout
