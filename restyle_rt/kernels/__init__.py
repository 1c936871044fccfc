"""Fused StyleGAN2 modulated convolution: CUDA kernels, TensorRT plugin sources and references.

* ``reference``  torch / NumPy references (``styled_conv(..., impl='ref'|'grouped'|'phase'|'cuda')``),
                 ``PLUGIN_REFS``.
* ``build``      nvcc build of ``libmodconv_kernels.so`` into a source-hash cache; ``load_library``;
                 ``plugin_library_path`` for the TensorRT runtime.
* ``runner``     NumPy-in/NumPy-out execution through cuda-python; ``available()``.
* ``modulated_conv/``  CUDA sources, C ABI (modconv.h), TensorRT plugins, CMakeLists.txt, CONTRACT.md.

The CPU emulation of the CUDA source (the same ``modconv.cu`` compiled by g++ under ASan + UBSan, so kernel numerics
and launch bounds are checked without a GPU) is test machinery: ``tests/kernels/emu/``.

Nothing here compiles or touches a GPU at import time.
"""
