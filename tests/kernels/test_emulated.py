"""The CUDA kernels, compiled from the same source for the CPU emulator, against the float64 NumPy reference.

``emu/emulate.py`` (test machinery beside this file) builds the package's ``modconv.cu`` with g++,
``emu/cuda_emu.h`` and ``-fsanitize=address,undefined -fno-sanitize-recover=all``; every run is a subprocess that
fails on any sanitizer report. The launch code (grid, block, shared-memory bytes, path choice) is the CUDA build's
own. Covered: every distinct modulated-conv layer of the StyleGAN2 generators with 256, 512 and 1024 px outputs (real
channel counts and kernel types; spatial size reduced, keeping partial and multiple 8x16 tiles where the layer is
cheap enough), FP32 and FP16 storage. What the emulator does not model is listed at the top of emu/cuda_emu.h.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from emu import emulate
from kernel_cases import LAYER_KINDS, make_layer, stylegan2_layer_shapes, tolerance

from restyle_rt.kernels import reference as R

SHAPES = stylegan2_layer_shapes((256, 512, 1024))


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """The sanitized emulator driver, built once per session (cached by source hash under the test cache)."""
    if emulate.find_cxx() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): the CPU emulation of the CUDA kernels needs one")
    root = os.environ.get("RESTYLE_RT_TEST_CACHE")
    root = Path(root) / "kernel-emu" if root else tmp_path_factory.mktemp("kernel-emu")
    return emulate.build_emulator(root=root)


def _reduced_size(cin, cout, up, res_in):
    """Input H, W: cheap layers get 9x20 (two partial 8x16 tiles per axis), 512-channel ones a single partial tile.
    The tiled kernel computes whole 8x16 tiles, so a smaller size would not make them cheaper."""
    small = cin * cout * (4 if up else 1) <= 128 * 64 * 4
    return (min(res_in, 9), min(res_in, 20)) if small else (min(res_in, 5), min(res_in, 7))


def _run_both_dtypes(exe, kind, batch, cin, cout, h, w, noise, seed=0):
    x, s, wt, b, n = make_layer(kind, batch, cin, cout, h, w, seed=seed, noise=noise)
    _, _, up, demod, act = kind
    want = R.styled_conv_np(x, s, wt, b, n, demod, up, act)  # float64 inside, from the FP32 x

    def one(dtype):
        xd = x.astype(dtype)
        got, trace = emulate.modulated_conv(xd, s, wt, b, n, demod, up, act, exe=exe, trace=True)
        ref = want if dtype == np.float32 else R.styled_conv_np(xd, s, wt, b, n, demod, up, act)
        assert got.dtype == dtype and got.shape == ref.shape
        assert np.isfinite(got).all(), f"{np.isnan(got).sum()} output elements never written (NaN-filled)"
        return rel_l2(got, ref), trace

    with ThreadPoolExecutor(2) as pool:  # two sanitized processes at once: CI has two cores
        return dict(zip(("fp32", "fp16"), pool.map(one, (np.float32, np.float16))))


def test_emulator_selftest(emulator):
    out = emulate.run(emulator, ["--selftest"])
    assert "FAIL" not in out and out.count("ok:") == 9, out


@pytest.mark.parametrize("kind,cin,cout,res_in", SHAPES, ids=[f"{k[0]}-{ci}-{co}" for k, ci, co, _ in SHAPES])
def test_stylegan2_layer_matches_reference(emulator, kind, cin, cout, res_in, record_property):
    up = kind[2]
    h, w = _reduced_size(cin, cout, up, res_in)
    batch = 2 if cin * cout <= 128 * 128 else 1
    noise = "scalar" if kind[0] == "torgb1x1" else "full"
    res = _run_both_dtypes(emulator, kind, batch, cin, cout, h, w, noise, seed=cin + cout)
    for prec, (err, trace) in res.items():
        record_property(f"{prec}_rel_l2", err)
        assert err < tolerance("emulated", prec), (prec, err, trace)
    expected_kernel = "modconv_1x1_small" if kind[0] == "torgb1x1" else "modconv_tiled"
    assert expected_kernel in res["fp32"][1] and ("demod_kernel" in res["fp32"][1]) == kind[3]


@pytest.mark.parametrize("cin,cout", [(3072, 4), (4096, 3), (3073, 4), (4097, 3)])
def test_1x1_small_cout_path_fits_default_shared_memory(emulator, cin, cout):
    """Defect 10: the small-Cout 1x1 kernel asked for 16*Cin bytes of dynamic shared memory (bound Cin <= 12288)
    while a launch may use 48 KiB without cudaFuncSetAttribute. Now it asks for 4*Cout*Cin bytes and is chosen only
    while that fits; larger Cin goes to the tiled kernel. Before the fix Cin 3073..12288 failed to launch."""
    kind = LAYER_KINDS[2]
    res = _run_both_dtypes(emulator, kind, 1, cin, cout, 3, 5, "scalar", seed=cin)
    fits = 4 * cout * cin <= 48 * 1024
    for prec, (err, trace) in res.items():
        assert err < tolerance("emulated", prec), (prec, err)
        assert ("modconv_1x1_small" in trace) == fits and ("modconv_tiled" in trace) != fits, trace
        if fits:
            assert f"smem={4 * cout * cin}" in trace, trace


@pytest.mark.parametrize("noise", ["scalar", None])
def test_noise_modes_and_odd_sizes(emulator, noise):
    # Cin not a multiple of the Cin chunk (8), Cout not a multiple of the channel tile, partial tiles.
    for kind in LAYER_KINDS[:2]:
        res = _run_both_dtypes(emulator, kind, 3, 13, 37, 5, 19, noise, seed=7)
        for prec, (err, _) in res.items():
            assert err < tolerance("emulated", prec), (kind[0], prec, err)


def test_sanitizers_are_on_and_fail_the_run(emulator, tmp_path):
    """A case the driver cannot read fails the run; the build carries the sanitizer flags."""
    assert "-fsanitize=address,undefined" in emulate.CXX_FLAGS and "-fno-sanitize-recover=all" in emulate.CXX_FLAGS
    syms = os.popen(f"nm {emulator} | grep -c __asan_report").read().strip()
    assert int(syms or 0) > 0, "driver is not instrumented by ASan"
    with pytest.raises(Exception, match="case.txt missing"):
        emulate.run(emulator, [str(tmp_path)])
