"""CPU emulation of the CUDA subset the modulated-conv kernels use (test machinery; not part of the package)."""
