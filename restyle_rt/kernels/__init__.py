"""Fused StyleGAN2 modulated convolution: CUDA kernels, TensorRT plugin sources and references.

* ``reference``  torch / NumPy references (``styled_conv(..., impl='ref'|'grouped'|'phase'|'cuda')``),
                 ``PLUGIN_REFS``.
* ``build``      nvcc build of ``libmodconv_kernels.so`` into a source-hash cache; ``load_library``;
                 ``plugin_library_path`` for the TensorRT runtime.
* ``runner``     NumPy-in/NumPy-out execution through cuda-python; ``available()``.
* ``emulate``    the same CUDA source compiled by g++ on a CPU emulation of CUDA (``modulated_conv/emu``),
                 under ASan + UBSan: kernel numerics and launch bounds checked without a GPU.
* ``modulated_conv/``  CUDA sources, C ABI (modconv.h), TensorRT plugins, CMakeLists.txt, CONTRACT.md,
                       emu/ (CPU emulation of the CUDA subset the kernels use).

Nothing here compiles or touches a GPU at import time.
"""
